using System.Reflection;
using System.Runtime.InteropServices;

namespace BnbDist.Backends.Interop;

/// <summary>The few CUDA runtime and driver entry points BnbDist needs (events, device queries, memory info).</summary>
/// <remarks>
/// Bound by P/Invoke to the CUDA runtime (<c>libcudart.so</c>, any of the usual sonames) and driver (<c>libcuda.so.1</c>).
/// Nothing here is called unless a CUDA device is in use, so a CPU-only machine never loads either library.
/// </remarks>
public static partial class CudaRuntime
{
    internal const string CudartName = "bnbdist_cudart";
    internal const string DriverName = "bnbdist_cuda_driver";

    private static readonly string[] CudartCandidates =
        ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"];

    static CudaRuntime() => NativeResolver.Register();

    internal static IntPtr ResolveCudart(Assembly assembly)
    {
        foreach (var name in CudartCandidates)
        {
            if (NativeLibrary.TryLoad(name, assembly, null, out var h))
            {
                return h;
            }

            var home = Environment.GetEnvironmentVariable("CUDA_HOME");
            if (home is not null && NativeLibrary.TryLoad(Path.Combine(home, "lib64", name), out h))
            {
                return h;
            }
        }

        return IntPtr.Zero;
    }

    [LibraryImport(CudartName)]
    internal static partial int cudaGetDeviceCount(out int count);

    [LibraryImport(CudartName)]
    internal static partial int cudaSetDevice(int device);

    [LibraryImport(CudartName)]
    internal static partial int cudaGetDevice(out int device);

    [LibraryImport(CudartName)]
    internal static partial int cudaDeviceSynchronize();

    [LibraryImport(CudartName)]
    internal static partial int cudaRuntimeGetVersion(out int version);

    [LibraryImport(CudartName)]
    internal static partial int cudaDriverGetVersion(out int version);

    [LibraryImport(CudartName)]
    internal static partial int cudaMemGetInfo(out nuint free, out nuint total);

    [LibraryImport(CudartName)]
    internal static partial int cudaDeviceGetAttribute(out int value, int attribute, int device);

    [LibraryImport(CudartName)]
    internal static partial IntPtr cudaGetErrorString(int error);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventCreate(out IntPtr evt);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventRecord(IntPtr evt, IntPtr stream);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventSynchronize(IntPtr evt);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventElapsedTime(out float ms, IntPtr start, IntPtr end);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventDestroy(IntPtr evt);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventCreateWithFlags(out IntPtr evt, uint flags);

    [LibraryImport(CudartName)]
    internal static partial int cudaEventQuery(IntPtr evt);

    [LibraryImport(CudartName)]
    internal static partial int cudaStreamCreateWithFlags(out IntPtr stream, uint flags);

    [LibraryImport(CudartName)]
    internal static partial int cudaStreamWaitEvent(IntPtr stream, IntPtr evt, uint flags);

    [LibraryImport(CudartName)]
    internal static partial int cudaStreamDestroy(IntPtr stream);

    [LibraryImport(CudartName)]
    internal static partial int cudaGetLastError();

    [LibraryImport(CudartName)]
    internal static partial int cudaMemcpyAsync(IntPtr dst, IntPtr src, nuint count, int kind, IntPtr stream);

    [LibraryImport(DriverName)]
    internal static partial int cuInit(uint flags);

    [LibraryImport(DriverName)]
    internal static partial int cuDeviceGetName(IntPtr name, int len, int device);

    /// <summary>cudaDevAttrComputeCapabilityMajor.</summary>
    internal const int AttrComputeCapabilityMajor = 75;

    /// <summary>cudaDevAttrComputeCapabilityMinor.</summary>
    internal const int AttrComputeCapabilityMinor = 76;

    /// <summary>cudaDevAttrMultiProcessorCount.</summary>
    internal const int AttrMultiProcessorCount = 16;

    /// <summary>cudaEventDisableTiming: events used only for ordering and completion are cheaper without timing.</summary>
    internal const uint EventDisableTiming = 0x02;

    /// <summary>cudaStreamNonBlocking: a stream that does not synchronize implicitly with the legacy default stream.</summary>
    internal const uint StreamNonBlocking = 0x01;

    /// <summary>cudaErrorNotReady, returned by cudaEventQuery while the work before the event is still running.</summary>
    internal const int ErrorNotReady = 600;

    /// <summary>cudaMemcpyHostToDevice.</summary>
    internal const int MemcpyHostToDevice = 1;

    /// <summary>cudaMemcpyDeviceToDevice.</summary>
    internal const int MemcpyDeviceToDevice = 3;

    /// <summary>Throws <see cref="CudaException"/> with the runtime's message when <paramref name="code"/> is not 0.</summary>
    public static void Check(int code, string what)
    {
        if (code != 0)
        {
            throw new CudaException(code, $"{what} failed: CUDA error {code} ({ErrorString(code)})");
        }
    }

    /// <summary>The CUDA runtime's text for an error code.</summary>
    public static string ErrorString(int code)
    {
        try
        {
            return Marshal.PtrToStringAnsi(cudaGetErrorString(code)) ?? "unknown";
        }
        catch (DllNotFoundException)
        {
            return "unknown (CUDA runtime not loaded)";
        }
    }

    /// <summary>The device name as the driver reports it.</summary>
    public static string DeviceName(int device)
    {
        Check(cuInit(0), "cuInit");
        var buf = Marshal.AllocHGlobal(256);
        try
        {
            Check(cuDeviceGetName(buf, 256, device), "cuDeviceGetName");
            return Marshal.PtrToStringAnsi(buf) ?? "unknown";
        }
        finally
        {
            Marshal.FreeHGlobal(buf);
        }
    }

    /// <summary>Compute capability (major, minor) of a device.</summary>
    public static (int Major, int Minor) ComputeCapability(int device)
    {
        Check(cudaDeviceGetAttribute(out var major, AttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
        Check(cudaDeviceGetAttribute(out var minor, AttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
        return (major, minor);
    }

    /// <summary>Free and total device memory in bytes of the current device.</summary>
    public static (ulong Free, ulong Total) MemoryInfo()
    {
        Check(cudaMemGetInfo(out var free, out var total), "cudaMemGetInfo");
        return (free, total);
    }

    /// <summary>Makes <paramref name="device"/> current for the calling thread.</summary>
    public static void SetDevice(int device) => Check(cudaSetDevice(device), "cudaSetDevice");

    /// <summary>Waits for all work on the current device.</summary>
    public static void Synchronize() => Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

    /// <summary>Runtime version as an integer (e.g. 13000 for 13.0).</summary>
    public static int RuntimeVersion()
    {
        Check(cudaRuntimeGetVersion(out var v), "cudaRuntimeGetVersion");
        return v;
    }

    /// <summary>Driver version as an integer (e.g. 13000 for 13.0).</summary>
    public static int DriverVersion()
    {
        Check(cudaDriverGetVersion(out var v), "cudaDriverGetVersion");
        return v;
    }
}

/// <summary>A CUDA runtime or kernel failure, with the CUDA error code and its text.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CudaException(int errorCode, string message)
        : base(message) => ErrorCode = errorCode;

    /// <summary>Creates the exception.</summary>
    public CudaException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public CudaException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public CudaException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The cudaError_t (or BnbDist kernel) code.</summary>
    public int ErrorCode { get; }
}
