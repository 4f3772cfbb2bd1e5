using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests;

/// <summary>Test helpers for parameters and gradients.</summary>
internal static class TestGrads
{
    /// <summary>A fresh parameter holding a copy of <paramref name="data"/>.</summary>
    public static Parameter Param(Tensor data) => new(data.clone().detach(), requires_grad: true);

    /// <summary>
    /// Makes <paramref name="p"/>.grad exactly <paramref name="g"/> (TorchSharp has no grad setter): the gradient of
    /// sum(p·g) with respect to p is g, accumulated into a zeroed (or absent) gradient.
    /// </summary>
    public static void Set(Parameter p, Tensor g)
    {
        using (no_grad())
        {
            p.grad?.zero_();
        }

        using var scope = NewDisposeScope();
        (p * g.to(p.dtype)).sum().backward();
    }

    /// <summary>The values of a tensor as f32.</summary>
    public static float[] Floats(Tensor t) => t.detach().cpu().to(ScalarType.Float32).data<float>().ToArray();
}
