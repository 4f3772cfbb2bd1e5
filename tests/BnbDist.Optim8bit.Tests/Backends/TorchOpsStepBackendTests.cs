using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Backends;

/// <summary>
/// The device-agnostic TorchSharp-ops step (what CUDA tensors use until a fused kernel exists), run on the CPU against
/// the C# kernels: every rule, 8- and 32-bit state, f32/bf16/f16 parameters, several steps, a tensor that spans
/// several of its chunks. It emulates the kernels' FMAs in f64, so results are identical except for rare double
/// roundings.
/// </summary>
public class TorchOpsStepBackendTests
{
    public static TheoryData<string, bool, ScalarType> Cases() => CpuStepBackendTests.Cases();

    [Theory]
    [MemberData(nameof(Cases))]
    public void TorchOpsStepMatchesTheKernels(string ruleName, bool is8bit, ScalarType dtype)
    {
        var rule = Enum.Parse<UpdateRule>(ruleName);
        const long n = 70_001;
        using var ops = new StepFixture(rule, is8bit, dtype, n, seed: 11);
        using var cpu = new StepFixture(rule, is8bit, dtype, n, seed: 11);
        for (var step = 1; step <= 4; step++)
        {
            OptimizerBackends.Run(TorchOpsStepBackend.Instance, rule, [ops.Update(step)]);
            OptimizerBackends.Run(CpuStepBackend.Instance, rule, [cpu.Update(step)]);
        }

        var a = ops.Snapshot();
        var b = cpu.Snapshot();
        for (var k = 0; k < a.Length; k++)
        {
            var diff = a[k].Zip(b[k]).Count(z => z.First != z.Second);
            Assert.True(diff == 0, $"tensor {k}: {diff} of {a[k].Length} bytes differ");
        }
    }
}
