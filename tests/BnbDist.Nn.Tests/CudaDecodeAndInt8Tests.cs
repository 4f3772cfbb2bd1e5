using BnbDist.Nn.Autograd;
using BnbDist.Tests;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Nn.Tests;

/// <summary>
/// The CUDA inference paths of the quantized linears: Linear4bit's single-row GEMV (decode) and Linear8bitLt's cuBLASLt int8 GEMM,
/// each against the path it replaces.
/// </summary>
public class CudaDecodeAndInt8Tests
{
    [Fact]
    public void GemvIsTakenOnlyForOneCudaRowWithoutGradientsAndMatchesDequantizeMatmul()
    {
        // Routing is decided without a GPU: a CPU row, several rows and a row needing a gradient keep the autograd path.
        var (_, cpuState) = BnbDist.Functional.QuantizeNF4(randn(16, 64), 64, compressStatistics: true);
        Assert.False(MatMul4Bit.UsesGemv(randn(1, 64), cpuState, null));
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        var cuda = TestDevices.Cuda;
        manual_seed(21);
        var layer = new Linear4bit(1024, 300, true, ScalarType.BFloat16, true, QuantType.NF4);
        layer.to(cuda);
        var state = layer.QuantState!;
        Assert.True(MatMul4Bit.UsesGemv(randn(1, 1, 1024, device: cuda), state, null));
        Assert.False(MatMul4Bit.UsesGemv(randn(1, 1, 1024, device: cuda), state, layer.Bias)); // the bias trains: autograd path
        Assert.False(MatMul4Bit.UsesGemv(randn(2, 1024, device: cuda), state, null));
        Assert.False(MatMul4Bit.UsesGemv(randn(1, 1024, device: cuda, requires_grad: true), state, null));

        using var x = randn(1, 1, 1024, device: cuda).to_type(ScalarType.BFloat16);
        Tensor decoded;
        using (no_grad())
        {
            decoded = layer.forward(x);
        }

        Assert.Equal([1, 1, 300], decoded.shape);
        using var xg = x.detach().requires_grad_(true);
        using var viaMatmul = layer.forward(xg);
        Assert.True(viaMatmul.requires_grad);
        viaMatmul.sum().backward();
        Assert.NotNull(xg.grad);

        // Bound: the GEMV uses the f32 weight, the matmul path the bf16-rounded one; each output rounds to bf16, the bias add rounds
        // once more: 5·2^-8 of |x|·|W|ᵀ + |b| covers all of it.
        using var w = layer.DenseWeight(ScalarType.Float64).cpu();
        using var scale = (x.cpu().to_type(ScalarType.Float64).abs().matmul(w.abs().t()) + layer.Bias!.cpu().to_type(ScalarType.Float64).abs()) * (5 * Math.Pow(2, -8));
        var worst = ((decoded.cpu().to_type(ScalarType.Float64) - viaMatmul.detach().cpu().to_type(ScalarType.Float64)).abs() / scale).max().item<double>();
        Assert.True(worst <= 1.0, $"GEMV vs dequantize·matmul: {worst:F3} of the bound");
        decoded.Dispose();
    }

    [Fact]
    public void Linear8bitLtOnCudaMatchesTheCpuLayerWithOutliers()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        manual_seed(5);
        var layer = new Linear8bitLt(512, 256, true, hasFp16Weights: false, threshold: 6f);
        layer.Quantize();
        using var x = randn(96, 512);
        x[.., 7] = x[.., 7] * 30;
        x[.., 300] = x[.., 300] * 30;
        using var x16 = x.to_type(ScalarType.Float16);
        using var yCpu = layer.forward(x16).to_type(ScalarType.Float64);
        layer.to(TestDevices.Cuda);
        using var yCuda = layer.forward(x16.to(TestDevices.Cuda)).cpu().to_type(ScalarType.Float64);

        // The int8 quantization and the int32 product are bit-identical on both devices; the dequantization (CUDA: torch ops instead of
        // one FMA) and the fp16 outlier matmul (cuBLAS vs CPU accumulation order) may each differ by one fp16 rounding: 2·2^-11 of
        // |x|·|W|ᵀ + |b|.
        using var w = layer.DenseWeight(ScalarType.Float64).cpu();
        using var scale = (x16.to_type(ScalarType.Float64).abs().matmul(w.abs().t()) + layer.Bias!.cpu().to_type(ScalarType.Float64).abs()) * (2 * Math.Pow(2, -11));
        var worst = ((yCuda - yCpu).abs() / scale).max().item<double>();
        Assert.True(worst <= 1.0, $"CUDA vs CPU Linear8bitLt: {worst:F3} of the bound");
    }
}
