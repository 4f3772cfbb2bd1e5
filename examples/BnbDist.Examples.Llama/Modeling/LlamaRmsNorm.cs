using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>Llama's RMSNorm (Hugging Face's <c>LlamaRMSNorm</c>): normalizes in fp32, scales by <c>weight</c> in the input dtype.</summary>
public sealed class LlamaRmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double eps;

    /// <summary>Creates the norm with unit weight.</summary>
    public LlamaRmsNorm(long size, double eps, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LlamaRmsNorm))
    {
        this.eps = eps;
        weight = new Parameter(ones(size, dtype: dtype, device: device));
        RegisterComponents();
    }

    /// <summary>The scale.</summary>
    public Parameter Weight => weight;

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = input.to_type(ScalarType.Float32);
        var normed = x * rsqrt(x.pow(2).mean([-1L], keepdim: true) + eps);
        return (weight * normed.to_type(input.dtype)).MoveToOuterDisposeScope();
    }
}
