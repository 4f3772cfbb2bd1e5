using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Paging;

/// <summary>
/// Reusable device buffers that paged states are staged through: one per (device, dtype, slot), each one page long,
/// allocated on first use and kept (outside any DisposeScope) until the optimizer is disposed.
/// </summary>
internal sealed class StagingBuffers : IDisposable
{
    private readonly Dictionary<(string Device, ScalarType DType, int Slot), Tensor> buffers = [];

    /// <summary>The buffer for <paramref name="slot"/> (0: State1, 1: State2) of <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public Tensor Get(Device device, ScalarType dtype, int slot, long pageElements)
    {
        var key = (device.ToString(), dtype, slot);
        if (!buffers.TryGetValue(key, out var t) || t.numel() < pageElements)
        {
            t?.Dispose();
            t = empty(pageElements, dtype, device).DetachFromDisposeScope();
            buffers[key] = t;
        }

        return t;
    }

    /// <summary>Bytes held by the staging buffers.</summary>
    public long Bytes => buffers.Values.Sum(t => t.numel() * t.element_size());

    public void Dispose()
    {
        foreach (var t in buffers.Values)
        {
            t.Dispose();
        }

        buffers.Clear();
    }
}
