using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace BnbDist.Collectives.Nccl;

/// <summary>ncclUniqueId: 128 opaque bytes that rank 0 creates and every rank passes to ncclCommInitRank.</summary>
[StructLayout(LayoutKind.Sequential, Size = Bytes)]
internal unsafe struct NcclUniqueId
{
    public const int Bytes = 128;

    public fixed byte Internal[Bytes];
}

/// <summary>The NCCL entry points BnbDist uses (nccl.h), and the enum values it passes.</summary>
internal static partial class NcclNative
{
    // ncclResult_t
    public const int Success = 0;
    public const int InProgress = 7;

    // ncclRedOp_t
    public const int OpSum = 0;
    public const int OpMax = 2;
    public const int OpMin = 3;
    public const int OpAvg = 4;

    static NcclNative() => _ = NcclLibrary.IsAvailable; // registers the resolver before the first call binds

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclGetUniqueId(out NcclUniqueId uniqueId);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclCommInitRank(out IntPtr comm, int nranks, NcclUniqueId commId, int rank);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclCommDestroy(IntPtr comm);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclCommAbort(IntPtr comm);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclCommGetAsyncError(IntPtr comm, out int asyncError);

    [LibraryImport(NcclLibrary.Name)]
    public static partial IntPtr ncclGetErrorString(int result);

    [LibraryImport(NcclLibrary.Name)]
    public static partial IntPtr ncclGetLastError(IntPtr comm);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclAllReduce(IntPtr sendbuff, IntPtr recvbuff, nuint count, int datatype, int op, IntPtr comm, IntPtr stream);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclAllGather(IntPtr sendbuff, IntPtr recvbuff, nuint sendcount, int datatype, IntPtr comm, IntPtr stream);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclReduceScatter(IntPtr sendbuff, IntPtr recvbuff, nuint recvcount, int datatype, int op, IntPtr comm, IntPtr stream);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclBroadcast(IntPtr sendbuff, IntPtr recvbuff, nuint count, int datatype, int root, IntPtr comm, IntPtr stream);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclSend(IntPtr sendbuff, nuint count, int datatype, int peer, IntPtr comm, IntPtr stream);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclRecv(IntPtr recvbuff, nuint count, int datatype, int peer, IntPtr comm, IntPtr stream);

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclGroupStart();

    [LibraryImport(NcclLibrary.Name)]
    public static partial int ncclGroupEnd();

    /// <summary>ncclDataType_t of a TorchSharp dtype (bool travels as uint8, as in torch.distributed).</summary>
    /// <exception cref="ArgumentException">A dtype NCCL has no type for.</exception>
    public static int DataType(ScalarType dtype, string argument) => dtype switch
    {
        ScalarType.Int8 => 0,
        ScalarType.Byte or ScalarType.Bool => 1,
        ScalarType.Int32 => 2,
        ScalarType.Int64 => 4,
        ScalarType.Float16 => 6,
        ScalarType.Float32 => 7,
        ScalarType.Float64 => 8,
        ScalarType.BFloat16 => 9,
        _ => throw new ArgumentException($"NCCL has no data type for {dtype}.", argument),
    };

    /// <summary>ncclRedOp_t of a <see cref="ReduceOp"/>.</summary>
    public static int Op(ReduceOp op) => op switch
    {
        ReduceOp.Sum => OpSum,
        ReduceOp.Avg => OpAvg,
        ReduceOp.Max => OpMax,
        ReduceOp.Min => OpMin,
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "unknown reduction"),
    };

    /// <summary>NCCL's text for a result code, plus the communicator's last error message when there is one.</summary>
    public static string Describe(int result, IntPtr comm)
    {
        var text = Marshal.PtrToStringAnsi(ncclGetErrorString(result)) ?? "unknown";
        var last = comm == IntPtr.Zero ? null : Marshal.PtrToStringAnsi(ncclGetLastError(comm));
        return string.IsNullOrWhiteSpace(last) ? $"NCCL error {result} ({text})" : $"NCCL error {result} ({text}: {last})";
    }
}
