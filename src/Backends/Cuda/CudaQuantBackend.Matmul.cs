using BnbDist.Backends.Interop;
using static TorchSharp.torch;

namespace BnbDist.Backends.Cuda;

/// <summary>The CUDA matmul ops: the 4-bit GEMV kernel and the cuBLASLt int8 GEMM.</summary>
public sealed partial class CudaQuantBackend
{
    /// <inheritdoc/>
    protected override unsafe void Gemv4BitCore(Tensor x, Tensor packed, QuantType quantType, FourBitScales scales, Tensor output,
        long rows, long k, int blocksize)
    {
        Enter(x);
        int rc = scales.IsNested
            ? KernelLibrary.bnbd_gemv_4bit(DTypeCode(x.dtype), (int)quantType, V(x), B(packed), null, B(scales.QAbsmax!),
                F(scales.NestedAbsmax!), F(scales.NestedCode!), F(scales.Offset!), scales.NestedBlocksize, V(output), rows, k,
                blocksize, IntPtr.Zero)
            : KernelLibrary.bnbd_gemv_4bit(DTypeCode(x.dtype), (int)quantType, V(x), B(packed), F(scales.Absmax!), null, null,
                null, null, 0, V(output), rows, k, blocksize, IntPtr.Zero);
        KernelLibrary.Check(rc, "gemv_4bit");
        GC.KeepAlive(x);
        GC.KeepAlive(packed);
        GC.KeepAlive(scales);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// cuBLASLt's int8 kernels need K and N multiples of 4 and 4-byte aligned operands; other shapes (and a cuBLASLt that
    /// reports the problem unsupported) take the exact f64 path on the GPU, which gives the same int32 values.
    /// </remarks>
    protected override void Int8LinearMatmulCore(Tensor A, Tensor B, Tensor output, long m, long n, long k)
    {
        Enter(A);
        if (CublasLtInt8.CanRun(A, B, output, n, k) && CublasLtInt8.TryMatmul(A, B, output, m, n, k))
        {
            return;
        }

        Int8MatmulThroughF64(A, B, output, m, n);
    }
}
