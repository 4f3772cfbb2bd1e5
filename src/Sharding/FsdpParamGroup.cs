using BnbDist.Collectives;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// The sharded tensors of one <see cref="FullyShard.Apply"/>ed module (one block), communicated together: one
/// all-gather per buffer kind to unshard (f32 parameter shards, u8 quantized bytes, f32 quantization statistics), one
/// reduce-scatter for the gradients.
/// </summary>
/// <remarks>
/// The quantized kinds can be released and gathered again on their own (reshard after forward, re-gather before the
/// block's backward): 4-bit weights are read by their autograd function at backward time, not saved, so swapping
/// their storage is safe. Float parameters stay put between forward and backward because autograd saved them.
/// </remarks>
internal sealed class FsdpParamGroup
{
    private static readonly SlotBuffer[] AllKinds = [SlotBuffer.Params, SlotBuffer.QuantBytes, SlotBuffer.QuantStats];
    private static readonly SlotBuffer[] QuantKinds = [SlotBuffer.QuantBytes, SlotBuffer.QuantStats];
    private readonly ICommunicator comm;
    private readonly Device device;
    private readonly Dictionary<SlotBuffer, long> chunks = AllKinds.ToDictionary(k => k, _ => 0L);
    private readonly HashSet<SlotBuffer> resident = [];
    private readonly Dictionary<SlotBuffer, Tensor> gathered = [];
    private readonly List<(DeviceCollective Gather, Tensor Send)> deviceGathers = [];
    private Task? pendingGather;

    public FsdpParamGroup(string name, IReadOnlyList<ShardSlot> slots, IReadOnlyList<(string Name, Tensor Tensor)> replicated,
        IReadOnlyList<(string Prefix, BnbDist.Nn.Linear4bit Layer)> quantized, ICommunicator comm, Device device)
    {
        Name = name;
        Slots = slots;
        Replicated = replicated;
        Quantized = quantized;
        this.comm = comm;
        this.device = device;
        foreach (var s in slots)
        {
            s.Offset = chunks[s.Buffer];
            chunks[s.Buffer] += s.PaddedLength;
            if (s.Trainable)
            {
                s.GradOffset = GradChunk;
                GradChunk += s.PaddedLength;
            }
        }

        resident.UnionWith(AllKinds); // the module holds whole tensors until the first reshard
    }

    /// <summary>Module path of the block ("" for the root).</summary>
    public string Name { get; }

    /// <summary>The group's sharded tensors in a fixed order (the same on every rank).</summary>
    public IReadOnlyList<ShardSlot> Slots { get; }

    /// <summary>Small tensors every rank holds whole and equal (double-quant offsets), by name.</summary>
    public IReadOnlyList<(string Name, Tensor Tensor)> Replicated { get; }

    /// <summary>The group's 4-bit layers by module path prefix (relative to the block, like slot names).</summary>
    public IReadOnlyList<(string Prefix, BnbDist.Nn.Linear4bit Layer)> Quantized { get; }

    /// <summary>Per-rank f32 elements in one gradient reduce-scatter.</summary>
    public long GradChunk { get; }

    /// <summary>Whether every whole tensor is in the module.</summary>
    public bool IsUnsharded => resident.Count == AllKinds.Length;

    /// <summary>Whether the group has quantized weights (which can be released between forward and backward).</summary>
    public bool HasQuantized => QuantKinds.Any(k => chunks[k] > 0);

    /// <summary>Bytes one full unshard moves onto this rank (what the wire carries, padding included).</summary>
    public long GatheredBytesPerUnshard =>
        ((chunks[SlotBuffer.Params] * 4) + chunks[SlotBuffer.QuantBytes] + (chunks[SlotBuffer.QuantStats] * 4)) * (comm.WorldSize - 1);

    /// <summary>Bytes this rank has received by all-gathers so far (padding included; forward and backward unshards alike).</summary>
    public long GatheredBytesTotal { get; private set; }

    /// <summary>Issues the all-gathers of the missing kinds (non-blocking); <see cref="FinishUnshard"/> waits and fills the modules.</summary>
    /// <param name="quantizedOnly">Gather only the quantized weights (for backward; float parameters are still in place).</param>
    /// <remarks>
    /// On a GPU with a communicator that has its own stream (NCCL), the all-gathers run there without making the
    /// default stream wait: the compute queued after this call (the current block) overlaps them, and
    /// <see cref="FinishUnshard"/> orders the default stream after them with an event instead of waiting on the host.
    /// </remarks>
    public void StartUnshard(bool quantizedOnly = false)
    {
        if (pendingGather is not null || deviceGathers.Count > 0)
        {
            return;
        }

        var tasks = new List<Task>(3);
        foreach (var kind in quantizedOnly ? QuantKinds : AllKinds)
        {
            if (!resident.Contains(kind) && chunks[kind] > 0)
            {
                gathered[kind] = Gather(kind, tasks);
            }
        }

        pendingGather = tasks.Count == 0 ? null : Task.WhenAll(tasks);
    }

    /// <summary>Waits for the all-gathers (issuing them if needed) and puts the whole tensors into their modules.</summary>
    /// <param name="quantizedOnly">Only the quantized weights are needed (backward).</param>
    public void FinishUnshard(bool quantizedOnly = false)
    {
        Drain(); // a prefetch may have asked for other kinds than this call needs
        StartUnshard(quantizedOnly);
        Drain();
        foreach (var kind in quantizedOnly ? QuantKinds : AllKinds)
        {
            resident.Add(kind); // kinds with nothing to gather are trivially in place
        }
    }

    /// <summary>Frees every whole tensor, keeping only this rank's shards.</summary>
    public void Reshard() => Release(AllKinds);

    /// <summary>Frees the whole quantized weights only (reshard after forward).</summary>
    public void ReshardQuantized() => Release(QuantKinds);

    /// <summary>
    /// Reduce-scatters the whole gradients of the trainable tensors (averaged or summed over ranks) into the master
    /// shards' gradients (accumulating into an existing one) and drops the whole gradients.
    /// </summary>
    public Task ReduceGradientsAsync(bool average)
    {
        var trainable = Slots.Where(s => s.Trainable).ToList();
        if (trainable.Count == 0)
        {
            return Task.CompletedTask;
        }

        var world = comm.WorldSize;
        var input = zeros(world * GradChunk, ScalarType.Float32, device).DetachFromDisposeScope();
        using (no_grad())
        {
            foreach (var s in trainable)
            {
                if (s.Target.grad is not { } g)
                {
                    continue;
                }

                using var flat = g.detach().reshape(-1).to_type(ScalarType.Float32);
                for (var r = 0; r < world; r++)
                {
                    var range = s.Layout.Slice(r, s.Length, s.UnitsPerAtom);
                    if (range.Length > 0)
                    {
                        input.narrow(0, (r * GradChunk) + s.GradOffset, range.Length).copy_(flat.narrow(0, range.Start, range.Length));
                    }
                }

                s.Target.grad = null;
            }
        }

        var output = empty(GradChunk, ScalarType.Float32, device).DetachFromDisposeScope();
        var task = comm.ReduceScatterAsync(output, input, average ? ReduceOp.Avg : ReduceOp.Sum);
        return task.ContinueWith(t =>
        {
            try
            {
                t.GetAwaiter().GetResult();
                using var noGrad = no_grad();
                foreach (var s in trainable)
                {
                    var shard = output.narrow(0, s.GradOffset, s.Local.numel()).clone().DetachFromDisposeScope();
                    if (s.Master!.grad is { } existing)
                    {
                        existing.add_(shard);
                        shard.Dispose();
                    }
                    else
                    {
                        s.Master.grad = shard;
                    }
                }
            }
            finally
            {
                input.Dispose();
                output.Dispose();
            }
        }, TaskScheduler.Default);
    }

    private void Drain()
    {
        try
        {
            pendingGather?.GetAwaiter().GetResult();
            foreach (var (g, _) in deviceGathers)
            {
                g.OrderDefaultStream(); // the fills below are default-stream work: they now run after the all-gathers
            }

            foreach (var (kind, buffer) in gathered)
            {
                foreach (var s in Slots.Where(s => s.Buffer == kind))
                {
                    s.Fill(buffer, chunks[kind]);
                }

                resident.Add(kind);
            }
        }
        finally
        {
            pendingGather = null;
            foreach (var buffer in gathered.Values)
            {
                buffer.Dispose();
            }

            gathered.Clear();

            // Freed after the default stream waits on the all-gathers, so the caching allocator hands the send buffers
            // to later default-stream work only after NCCL has read them.
            foreach (var (g, send) in deviceGathers)
            {
                send.Dispose();
                g.Dispose();
            }

            deviceGathers.Clear();
        }
    }

    private void Release(SlotBuffer[] kinds)
    {
        if (pendingGather is not null || deviceGathers.Count > 0)
        {
            Drain(); // a prefetch nobody consumed: finish it so its buffers are freed and the kinds are known resident
        }

        foreach (var kind in kinds)
        {
            if (resident.Remove(kind))
            {
                foreach (var s in Slots.Where(s => s.Buffer == kind))
                {
                    s.Release();
                }
            }
        }
    }

    private Tensor Gather(SlotBuffer kind, List<Task> tasks)
    {
        var chunk = chunks[kind];
        var dtype = kind == SlotBuffer.QuantBytes ? ScalarType.Byte : ScalarType.Float32;
        var send = zeros(chunk, dtype, device).DetachFromDisposeScope();
        foreach (var s in Slots.Where(s => s.Buffer == kind))
        {
            s.Pack(send);
        }

        var recv = empty(comm.WorldSize * chunk, dtype, device).DetachFromDisposeScope();
        GatheredBytesTotal += chunk * recv.element_size() * (comm.WorldSize - 1);
        if (device.type == TorchSharp.DeviceType.CUDA && comm is IDeviceStreamCommunicator streams)
        {
            deviceGathers.Add((streams.AllGatherDeferred(recv, send), send));
            return recv;
        }

        tasks.Add(comm.AllGatherAsync(recv, send).ContinueWith(t =>
        {
            send.Dispose();
            t.GetAwaiter().GetResult();
        }, TaskScheduler.Default));
        return recv;
    }
}
