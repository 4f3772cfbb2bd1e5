using BnbDist.Optim8bit.Backends;
using BnbDist.Tests;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Backends;

/// <summary>
/// The optimizer classes on CUDA parameters step through the fused kernels and land on exactly the CPU result:
/// parameters and 8-bit states byte for byte after several steps, for a large (8-bit) and a small (32-bit) parameter
/// in one group, f32 and bf16, plain and paged.
/// </summary>
public class CudaStepBackendTests
{
    public static TheoryData<string, ScalarType> Cases() => new()
    {
        { nameof(AdamW8bit), ScalarType.Float32 },
        { nameof(AdamW8bit), ScalarType.BFloat16 },
        { nameof(PagedAdamW8bit), ScalarType.Float32 },
        { nameof(Lion8bit), ScalarType.Float32 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void CudaClassesMatchTheCpuClassesBitForBit(string optimizer, ScalarType dtype)
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        Assert.StartsWith("cuda", OptimizerBackends.NameFor(TestDevices.Cuda), StringComparison.Ordinal);
        var gen = new Generator(5);
        var init = new[] { randn(70_001, generator: gen).to_type(dtype), randn(1000, generator: gen).to_type(dtype) };
        var cpu = init.Select(t => new Parameter(t.clone())).ToList();
        var gpu = init.Select(t => new Parameter(t.cuda())).ToList();
        using var a = Make(optimizer, cpu);
        using var b = Make(optimizer, gpu);
        for (var step = 0; step < 4; step++)
        {
            for (var i = 0; i < init.Length; i++)
            {
                var g = randn(init[i].shape, generator: gen).to_type(dtype);
                cpu[i].grad = g.clone();
                gpu[i].grad = g.cuda();
            }

            a.step();
            b.step();
        }

        for (var i = 0; i < init.Length; i++)
        {
            Assert.Equal(Bytes(cpu[i]), Bytes(gpu[i]));
            foreach (var (key, t) in a.StateOf(cpu[i]).StateTensors())
            {
                Assert.Equal(Bytes(t), Bytes(b.StateOf(gpu[i]).StateTensors()[key]));
            }
        }
    }

    private static Optimizer8bit Make(string name, List<Parameter> ps) => name switch
    {
        nameof(AdamW8bit) => new AdamW8bit(ps, lr: 1e-3),
        nameof(PagedAdamW8bit) => new PagedAdamW8bit(ps, lr: 1e-3),
        _ => new Lion8bit(ps, lr: 1e-4),
    };

    private static byte[] Bytes(Tensor t) => t.detach().cpu().contiguous().bytes.ToArray();
}
