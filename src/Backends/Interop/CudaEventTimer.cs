namespace BnbDist.Backends.Interop;

/// <summary>Times GPU work on the legacy default stream with a pair of CUDA events (for benchmarks).</summary>
public sealed class CudaEventTimer : IDisposable
{
    private readonly IntPtr start;
    private readonly IntPtr stop;

    /// <summary>Creates the two events on the current device.</summary>
    public CudaEventTimer()
    {
        CudaRuntime.Check(CudaRuntime.cudaEventCreate(out start), "cudaEventCreate");
        CudaRuntime.Check(CudaRuntime.cudaEventCreate(out stop), "cudaEventCreate");
    }

    /// <summary>Milliseconds the device spent on the work <paramref name="enqueue"/> puts on the default stream.</summary>
    public float Time(Action enqueue)
    {
        ArgumentNullException.ThrowIfNull(enqueue);
        CudaRuntime.Check(CudaRuntime.cudaEventRecord(start, IntPtr.Zero), "cudaEventRecord");
        enqueue();
        CudaRuntime.Check(CudaRuntime.cudaEventRecord(stop, IntPtr.Zero), "cudaEventRecord");
        CudaRuntime.Check(CudaRuntime.cudaEventSynchronize(stop), "cudaEventSynchronize");
        CudaRuntime.Check(CudaRuntime.cudaEventElapsedTime(out var ms, start, stop), "cudaEventElapsedTime");
        return ms;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _ = CudaRuntime.cudaEventDestroy(start);
        _ = CudaRuntime.cudaEventDestroy(stop);
    }
}
