using static TorchSharp.torch;

namespace BnbDist.Backends.Cpu;

/// <summary>The CPU matmul ops: references for the CUDA kernels, exact where the op is exact.</summary>
public sealed partial class CpuQuantBackend
{
    /// <inheritdoc/>
    /// <remarks>
    /// The reference the CUDA GEMV is tested against: the weight dequantized to f32 exactly as <see cref="Dequantize4BitCore"/>
    /// does, the dot products in f64, one rounding to x's dtype at the end.
    /// </remarks>
    protected override void Gemv4BitCore(Tensor x, Tensor packed, QuantType quantType, FourBitScales scales, Tensor output,
        long rows, long k, int blocksize)
    {
        using var scope = NewDisposeScope();
        var w = empty(rows * k, ScalarType.Float32);
        Dequantize4BitCore(packed, quantType, scales, w, rows * k, blocksize);
        var y = w.view(rows, k).to_type(ScalarType.Float64).mv(x.flatten().to_type(ScalarType.Float64));
        output.copy_(y.to_type(ScalarType.Float32).to_type(output.dtype).view_as(output));
    }

    /// <inheritdoc/>
    protected override void Int8LinearMatmulCore(Tensor A, Tensor B, Tensor output, long m, long n, long k) =>
        Int8MatmulThroughF64(A, B, output, m, n);
}
