using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Host copies of the tensors an async save writes, kept from one save to the next: fresh host memory costs a page
/// fault per page (seconds per GB on some machines), so copying into the previous save's buffers is what keeps the
/// training stall of an async save at memory-copy speed. Like PyTorch's async checkpoint staging, it holds one
/// checkpoint's worth of host memory while the checkpointer lives.
/// </summary>
internal sealed class HostBufferPool : IDisposable
{
    private readonly Dictionary<string, Tensor> buffers = new(StringComparer.Ordinal);

    /// <summary>A host copy of <paramref name="t"/> in the buffer kept under <paramref name="key"/> (replaced if its dtype or size changed).</summary>
    public Tensor CopyIn(string key, Tensor t)
    {
        using var noGrad = no_grad();
        if (buffers.TryGetValue(key, out var buffer) && buffer.dtype == t.dtype && buffer.numel() == t.numel())
        {
            using var flat = t.detach().reshape(-1);
            buffer.copy_(flat);
            return buffer;
        }

        buffer?.Dispose();
        using var scope = NewDisposeScope();
        var copy = t.detach().cpu().contiguous().reshape(-1);
        copy = (t.device_type == DeviceType.CPU ? copy.clone() : copy).DetachFromDisposeScope(); // a GPU tensor's cpu() is already a copy
        buffers[key] = copy;
        return copy;
    }

    public void Dispose()
    {
        foreach (var b in buffers.Values)
        {
            b.Dispose();
        }

        buffers.Clear();
    }
}
