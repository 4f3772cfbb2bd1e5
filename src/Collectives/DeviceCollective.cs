using BnbDist.Backends.Interop;
using static TorchSharp.torch;

namespace BnbDist.Collectives;

/// <summary>
/// A communicator whose collectives run on a device stream of its own and can leave the device's default stream free
/// to keep computing until the result is needed (FSDP's prefetch: the next block's all-gather overlaps this block's
/// compute).
/// </summary>
public interface IDeviceStreamCommunicator
{
    /// <summary>
    /// Issues an all-gather of <paramref name="input"/> into <paramref name="output"/> on the communicator's stream,
    /// after the work already queued on the default stream (which may produce the input); unlike
    /// <see cref="ICommunicator.AllGatherAsync"/>, later default-stream work does not wait for it until
    /// <see cref="DeviceCollective.OrderDefaultStream"/> is called. Keep both tensors alive (and the input unchanged)
    /// until then.
    /// </summary>
    DeviceCollective AllGatherDeferred(Tensor output, Tensor input);
}

/// <summary>
/// A collective in flight on a communicator's stream (<see cref="IDeviceStreamCommunicator"/>): order the default
/// stream after it before touching its tensors there, without any host wait; <see cref="Completion"/> completes (or
/// faults) when it has finished on the device.
/// </summary>
public sealed class DeviceCollective : IDisposable
{
    private readonly int deviceIndex;
    private IntPtr done;

    internal DeviceCollective(Task completion, IntPtr done, int deviceIndex)
    {
        Completion = completion;
        this.done = done;
        this.deviceIndex = deviceIndex;
    }

    /// <summary>Completes when the collective has finished on the device; faults when it failed or the communicator aborted.</summary>
    public Task Completion { get; }

    /// <summary>
    /// Makes every later piece of work on the device's legacy default stream wait for the collective (a device-side
    /// event wait: the host does not block). Throws the collective's error if it has already failed.
    /// </summary>
    public void OrderDefaultStream()
    {
        if (Completion.IsFaulted)
        {
            Completion.GetAwaiter().GetResult();
        }

        if (done != IntPtr.Zero)
        {
            CudaRuntime.Check(CudaRuntime.cudaSetDevice(deviceIndex), "cudaSetDevice");
            CudaRuntime.Check(CudaRuntime.cudaStreamWaitEvent(IntPtr.Zero, done, 0), "cudaStreamWaitEvent");
        }
    }

    /// <summary>Releases the event (a pending device wait on it still completes).</summary>
    public void Dispose()
    {
        if (done != IntPtr.Zero)
        {
            _ = CudaRuntime.cudaEventDestroy(done);
            done = IntPtr.Zero;
        }
    }
}
