using BnbDist.Backends.Interop;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace BnbDist.Backends.Cuda;

/// <summary>
/// int8 × int8ᵀ → int32 with cuBLASLt (IMMA tensor cores): C [M, N] = A [M, K] · B [N, K]ᵀ, all row-major, on the legacy
/// default stream that TorchSharp uses.
/// </summary>
/// <remarks>
/// Row-major C is column-major Cᵀ [N, M] = B·Aᵀ: the column-major views of the buffers are Bᵀ (K × N, ld K) and Aᵀ (K × M,
/// ld K), so cuBLASLt computes D (N × M, ld N) = op(Bᵀ)·Aᵀ with TRANSA = T — the "TN" layout its int8 kernels want.
/// One handle and one 32 MiB workspace (a torch tensor, from the caching allocator) per device, kept for the process.
/// </remarks>
internal static unsafe class CublasLtInt8
{
    private const long WorkspaceBytes = 32L << 20;
    private static readonly Lock Gate = new();
    private static readonly Dictionary<int, (IntPtr Handle, Tensor Workspace)> PerDevice = [];
    private static int unsupportedLogged;

    /// <summary>Whether cuBLASLt's int8 kernels take this problem: K and N multiples of 4, 4-byte aligned operands.</summary>
    public static bool CanRun(Tensor A, Tensor B, Tensor output, long n, long k) =>
        k % 4 == 0 && n % 4 == 0 && CublasLt.IsAvailable &&
        Aligned(A) && Aligned(B) && Aligned(output);

    /// <summary>Runs the GEMM; false when cuBLASLt reports the problem unsupported (the caller takes the exact fallback).</summary>
    /// <exception cref="CudaException">Any other cuBLASLt failure, with the status name.</exception>
    public static bool TryMatmul(Tensor A, Tensor B, Tensor output, long m, long n, long k)
    {
        var device = A.device_index < 0 ? 0 : A.device_index;
        var (handle, workspace) = ForDevice(device, A.device);
        IntPtr desc = 0, bLayout = 0, aLayout = 0, dLayout = 0;
        try
        {
            CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(out desc, CublasLt.Compute32I, CublasLt.DataR32I), "cublasLtMatmulDescCreate");
            var opT = CublasLt.OpT;
            CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(desc, CublasLt.DescTransA, &opT, sizeof(int)),
                "cublasLtMatmulDescSetAttribute(TRANSA)");
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out bLayout, CublasLt.DataR8I, (ulong)k, (ulong)n, k), "cublasLtMatrixLayoutCreate(B)");
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out aLayout, CublasLt.DataR8I, (ulong)k, (ulong)m, k), "cublasLtMatrixLayoutCreate(A)");
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out dLayout, CublasLt.DataR32I, (ulong)n, (ulong)m, n), "cublasLtMatrixLayoutCreate(C)");
            int alpha = 1, beta = 0;
            var pd = (void*)TensorMemory.DataPointer(output);
            var status = CublasLt.cublasLtMatmul(handle, desc, &alpha, (void*)TensorMemory.DataPointer(B), bLayout,
                (void*)TensorMemory.DataPointer(A), aLayout, &beta, pd, dLayout, pd, dLayout, null,
                (void*)TensorMemory.DataPointer(workspace), (nuint)WorkspaceBytes, IntPtr.Zero);
            if (status == CublasLt.StatusNotSupported)
            {
                if (Interlocked.Exchange(ref unsupportedLogged, 1) == 0)
                {
                    QuantBackends.Logger.LogWarning("cuBLASLt has no int8 kernel for M={M} N={N} K={K}; using the exact f64 path.", m, n, k);
                }

                return false;
            }

            CublasLt.Check(status, "cublasLtMatmul(int8)");
            return true;
        }
        finally
        {
            if (dLayout != 0)
            {
                _ = CublasLt.cublasLtMatrixLayoutDestroy(dLayout);
            }

            if (aLayout != 0)
            {
                _ = CublasLt.cublasLtMatrixLayoutDestroy(aLayout);
            }

            if (bLayout != 0)
            {
                _ = CublasLt.cublasLtMatrixLayoutDestroy(bLayout);
            }

            if (desc != 0)
            {
                _ = CublasLt.cublasLtMatmulDescDestroy(desc);
            }

            GC.KeepAlive(A);
            GC.KeepAlive(B);
            GC.KeepAlive(output);
        }
    }

    private static (IntPtr Handle, Tensor Workspace) ForDevice(int device, Device torchDevice)
    {
        lock (Gate)
        {
            if (!PerDevice.TryGetValue(device, out var entry))
            {
                CublasLt.Check(CublasLt.cublasLtCreate(out var handle), "cublasLtCreate");
                var workspace = empty(WorkspaceBytes, ScalarType.Byte, torchDevice).DetachFromDisposeScope();
                entry = (handle, workspace);
                PerDevice[device] = entry;
            }

            return entry;
        }
    }

    private static bool Aligned(Tensor t) => (TensorMemory.DataPointer(t) & 3) == 0;
}
