using BnbDist.Backends.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Backends.Cuda;

/// <summary>The CUDA implementation: BnbDist's own kernels (native/kernels) on TorchSharp's default stream.</summary>
/// <remarks>
/// Kernels are launched on the legacy default stream, which TorchSharp's own ops use, so they are ordered with
/// them without extra synchronization. The tensor's device is made current first, for multi-GPU processes.
/// </remarks>
public sealed unsafe partial class CudaQuantBackend : QuantBackendBase
{
    /// <inheritdoc/>
    public override string Name => "cuda";

    /// <inheritdoc/>
    public override DeviceType DeviceType => DeviceType.CUDA;

    /// <inheritdoc/>
    protected override void QuantizeBlockwiseCore(Tensor A, Tensor code, Tensor? subOffset, Tensor absmax, Tensor output,
        long n, int blocksize)
    {
        Enter(A);
        var rc = KernelLibrary.bnbd_quantize_blockwise(DTypeCode(A.dtype), F(code), V(A), subOffset is null ? null : F(subOffset),
            F(absmax), B(output), n, blocksize, IntPtr.Zero);
        KernelLibrary.Check(rc, "quantize_blockwise");
        GC.KeepAlive(A);
        GC.KeepAlive(code);
        GC.KeepAlive(subOffset);
        GC.KeepAlive(absmax);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void DequantizeBlockwiseCore(Tensor A, Tensor code, Tensor absmax, Tensor output, long n, int blocksize)
    {
        Enter(A);
        var rc = KernelLibrary.bnbd_dequantize_blockwise(DTypeCode(output.dtype), F(code), B(A), F(absmax), V(output), n,
            blocksize, IntPtr.Zero);
        KernelLibrary.Check(rc, "dequantize_blockwise");
        GC.KeepAlive(A);
        GC.KeepAlive(code);
        GC.KeepAlive(absmax);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void Quantize4BitCore(Tensor A, QuantType quantType, Tensor absmax, Tensor packed, long n, int blocksize)
    {
        Enter(A);
        var rc = KernelLibrary.bnbd_quantize_4bit(DTypeCode(A.dtype), (int)quantType, V(A), F(absmax), B(packed), n, blocksize,
            IntPtr.Zero);
        KernelLibrary.Check(rc, "quantize_4bit");
        GC.KeepAlive(A);
        GC.KeepAlive(absmax);
        GC.KeepAlive(packed);
    }

    /// <inheritdoc/>
    protected override void Dequantize4BitCore(Tensor packed, QuantType quantType, FourBitScales scales, Tensor output,
        long n, int blocksize)
    {
        Enter(packed);
        int rc = scales.IsNested
            ? KernelLibrary.bnbd_dequantize_4bit(DTypeCode(output.dtype), (int)quantType, B(packed), null, B(scales.QAbsmax!),
                F(scales.NestedAbsmax!), F(scales.NestedCode!), F(scales.Offset!), scales.NestedBlocksize, V(output), n,
                blocksize, IntPtr.Zero)
            : KernelLibrary.bnbd_dequantize_4bit(DTypeCode(output.dtype), (int)quantType, B(packed), F(scales.Absmax!), null,
                null, null, null, 0, V(output), n, blocksize, IntPtr.Zero);
        KernelLibrary.Check(rc, "dequantize_4bit");
        GC.KeepAlive(packed);
        GC.KeepAlive(scales);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void MeanCore(Tensor x, Tensor output, long n)
    {
        Enter(x);
        var wsBytes = KernelLibrary.bnbd_mean_workspace_bytes(n);
        using var workspace = empty(Math.Max(1, wsBytes), ScalarType.Byte, x.device);
        var rc = KernelLibrary.bnbd_mean_f32(n == 0 ? null : F(x), n, F(output), V(workspace), IntPtr.Zero);
        KernelLibrary.Check(rc, "mean_f32");
        GC.KeepAlive(x);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void Int8VectorwiseQuantCore(Tensor A, float threshold, Tensor output, Tensor rowStats, long rows, long cols)
    {
        Enter(A);
        var rc = KernelLibrary.bnbd_int8_vectorwise_quant(DTypeCode(A.dtype), V(A), (sbyte*)V(output), F(rowStats), rows, cols,
            threshold, IntPtr.Zero);
        KernelLibrary.Check(rc, "int8_vectorwise_quant");
        GC.KeepAlive(A);
        GC.KeepAlive(output);
        GC.KeepAlive(rowStats);
    }

    private static void Enter(Tensor t)
    {
        if (!KernelLibrary.IsAvailable)
        {
            throw new InvalidOperationException(
                $"CUDA tensors need BnbDist's kernel library, which did not load. {KernelLibrary.LoadError}");
        }

        CudaRuntime.SetDevice(t.device_index < 0 ? 0 : t.device_index);
    }

    private static float* F(Tensor t) => (float*)TensorMemory.DataPointer(t);

    private static byte* B(Tensor t) => (byte*)TensorMemory.DataPointer(t);

    private static void* V(Tensor t) => (void*)TensorMemory.DataPointer(t);
}
