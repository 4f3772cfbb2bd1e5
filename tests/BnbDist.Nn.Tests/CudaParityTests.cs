using BnbDist.Nn.Lora;
using BnbDist.Nn.Surgery;
using BnbDist.Tests;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Nn.Tests;

/// <summary>
/// The modules on CUDA against the same modules on CPU (GPU host only): identical packed weights, and outputs and
/// gradients that differ only by accumulation order. Both devices multiply the same operands (the dequantized weight
/// is bit-identical), so each is within one rounding of the compute dtype of the exact product: the bound is two such
/// roundings of the absolute product, element by element.
/// </summary>
public class CudaParityTests
{
    public static TheoryData<QuantType, ScalarType> Cases() => new()
    {
        { QuantType.NF4, ScalarType.Float32 },
        { QuantType.NF4, ScalarType.BFloat16 },
        { QuantType.NF4, ScalarType.Float16 },
        { QuantType.FP4, ScalarType.Float32 },
        { QuantType.FP4, ScalarType.BFloat16 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Linear4bitForwardAndInputAndBiasGradientsMatchCpu(QuantType type, ScalarType dtype)
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        manual_seed(11);
        var (cpu, gpu) = Pair(type, dtype, 320, 192);
        Assert.True(cpu.Weight.equal(gpu.Weight.cpu()).all().item<bool>(), "packed weights differ between CPU and CUDA quantization");

        using var x = randn(3, 5, 320).to_type(dtype);
        using var g = randn(3, 5, 192).to_type(dtype);
        var (yc, gxc, gbc) = ForwardBackward(cpu, x, g);
        var (yg, gxg, gbg) = ForwardBackward(gpu, x.cuda(), g.cuda());

        using var w = cpu.DenseWeight(ScalarType.Float64);
        using var x64 = x.to_type(ScalarType.Float64);
        using var g64 = g.to_type(ScalarType.Float64);
        using var b64 = cpu.Bias!.detach().to_type(dtype).to_type(ScalarType.Float64);
        var eps = Epsilon(dtype);
        AssertWithin(yg, yc, (x64.abs().matmul(w.abs().t()) + b64.abs()) * (2 * eps), "output");
        AssertWithin(gxg, gxc, g64.abs().matmul(w.abs()) * (2 * eps), "input gradient");
        AssertWithin(gbg, gbc, g64.abs().sum([0L, 1L]) * (2 * eps), "bias gradient");
        Assert.Null(gpu.Weight.grad);
    }

    [Fact]
    public void LoraOnLinear4bitGivesTheSameAdapterGradientsOnCuda()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        manual_seed(12);
        var (cpuBase, gpuBase) = Pair(QuantType.NF4, ScalarType.Float32, 256, 128);
        var cpu = new LoraLinear(cpuBase, r: 8, alpha: 16);
        var gpu = new LoraLinear(gpuBase, r: 8, alpha: 16);
        using (no_grad())
        {
            cpu.LoraB.normal_(0, 0.05); // B starts at zero (peft); a non-zero B gives A a gradient to compare
            gpu.LoraA.copy_(cpu.LoraA.to(gpu.LoraA.device));
            gpu.LoraB.copy_(cpu.LoraB.to(gpu.LoraB.device));
        }

        gpu.to(TestDevices.Cuda);
        using var x = randn(4, 7, 256);
        using var g = randn(4, 7, 128);
        (cpu.forward(x) * g).sum().backward();
        (gpu.forward(x.cuda()) * g.cuda()).sum().backward();
        Assert.True(RelL2(gpu.LoraA.grad!, cpu.LoraA.grad!) < 1e-5, "lora_A gradient");
        Assert.True(RelL2(gpu.LoraB.grad!, cpu.LoraB.grad!) < 1e-5, "lora_B gradient");
    }

    [Fact]
    public void QuantizedModelSurgeryOnCudaMatchesCpu()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        manual_seed(13);
        var cpu = new TinyModel();
        manual_seed(13);
        var gpu = new TinyModel();
        var config = new BitsAndBytesConfig { ComputeDType = ScalarType.Float32 };
        ModelSurgery.QuantizeLinears(cpu, config);
        ModelSurgery.QuantizeLinears(gpu, config);
        gpu.to(TestDevices.Cuda);
        using var x = randn(6, 64);
        using var yc = cpu.forward(x);
        using var yg = gpu.forward(x.cuda());
        Assert.True(yc.allclose(yg.cpu(), rtol: 1e-4, atol: 1e-5));
        var quantized = gpu.named_modules().Select(m => m.module).OfType<Linear4bit>().ToList();
        Assert.Equal(4, quantized.Count);
        Assert.All(quantized, l => Assert.True(l.IsQuantized && l.Weight.device_type == DeviceType.CUDA));
    }

    /// <summary>The same layer twice: quantized on CPU, and moved to CUDA (which quantizes there, as bitsandbytes does).</summary>
    private static (Linear4bit Cpu, Linear4bit Gpu) Pair(QuantType type, ScalarType dtype, long inF, long outF)
    {
        var cpu = new Linear4bit(inF, outF, true, dtype, true, type);
        var gpu = new Linear4bit(inF, outF, true, dtype, true, type);
        gpu.load_state_dict(cpu.state_dict());
        cpu.Quantize();
        gpu.to(TestDevices.Cuda);
        Assert.True(gpu.IsQuantized);
        return (cpu, gpu);
    }

    private static (Tensor Y, Tensor GradX, Tensor GradBias) ForwardBackward(Linear4bit layer, Tensor x, Tensor g)
    {
        var xg = x.detach().requires_grad_(true);
        var y = layer.forward(xg);
        (y * g).sum().backward();
        return (y.detach().cpu(), xg.grad!.cpu(), layer.Bias!.grad!.cpu());
    }

    private static double Epsilon(ScalarType dtype) => dtype switch
    {
        ScalarType.BFloat16 => Math.Pow(2, -8),
        ScalarType.Float16 => Math.Pow(2, -11),
        _ => Math.Pow(2, -20), // f32: rounding 2^-24 per step; f32 accumulation over a few hundred terms stays well inside this
    };

    private static void AssertWithin(Tensor actual, Tensor expected, Tensor bound, string what)
    {
        using var diff = (actual.to_type(ScalarType.Float64) - expected.to_type(ScalarType.Float64)).abs();
        var worst = (diff / bound.clamp_min(1e-30)).max().item<double>();
        Assert.True(worst <= 1.0, $"{what}: max |cuda - cpu| is {worst:F3} of the bound");
    }

    private static double RelL2(Tensor actual, Tensor expected)
    {
        using var a = actual.cpu().to_type(ScalarType.Float64);
        using var e = expected.to_type(ScalarType.Float64);
        return ((a - e).norm() / e.norm()).item<double>();
    }
}
