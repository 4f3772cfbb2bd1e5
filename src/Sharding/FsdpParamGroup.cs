using BnbDist.Collectives;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// The sharded tensors of one <see cref="FullyShard.Apply"/>ed module (one block), communicated together: one
/// all-gather per buffer kind to unshard (f32 shards and u8 quantized bytes), one reduce-scatter for the gradients.
/// </summary>
internal sealed class FsdpParamGroup
{
    private readonly ICommunicator comm;
    private readonly Device device;
    private Task? pendingGather;
    private Tensor? gatheredFloat;
    private Tensor? gatheredByte;

    public FsdpParamGroup(string name, IReadOnlyList<ShardSlot> slots, IReadOnlyList<(string Name, Tensor Tensor)> replicated,
        ICommunicator comm, Device device)
    {
        Name = name;
        Slots = slots;
        Replicated = replicated;
        this.comm = comm;
        this.device = device;
        foreach (var s in slots)
        {
            if (s.Buffer == SlotBuffer.Float)
            {
                s.Offset = FloatChunk;
                FloatChunk += s.PaddedLength;
            }
            else
            {
                s.Offset = ByteChunk;
                ByteChunk += s.PaddedLength;
            }

            if (s.Trainable)
            {
                s.GradOffset = GradChunk;
                GradChunk += s.PaddedLength;
            }
        }
    }

    /// <summary>Module path of the block ("" for the root).</summary>
    public string Name { get; }

    /// <summary>The group's sharded tensors in a fixed order (the same on every rank).</summary>
    public IReadOnlyList<ShardSlot> Slots { get; }

    /// <summary>Small tensors every rank holds whole and equal (double-quant offsets), by name.</summary>
    public IReadOnlyList<(string Name, Tensor Tensor)> Replicated { get; }

    /// <summary>Per-rank f32 elements in one all-gather.</summary>
    public long FloatChunk { get; }

    /// <summary>Per-rank bytes of quantized data in one all-gather.</summary>
    public long ByteChunk { get; }

    /// <summary>Per-rank f32 elements in one gradient reduce-scatter.</summary>
    public long GradChunk { get; }

    /// <summary>Whether the whole tensors are in the module.</summary>
    public bool IsUnsharded { get; private set; }

    /// <summary>Whether an all-gather has been issued and not consumed yet.</summary>
    public bool IsGathering => pendingGather is not null;

    /// <summary>Bytes one unshard moves onto this rank (what the wire carries, padding included).</summary>
    public long GatheredBytesPerUnshard => ((FloatChunk * 4) + ByteChunk) * (comm.WorldSize - 1);

    /// <summary>Issues the all-gathers (non-blocking); <see cref="FinishUnshard"/> waits and fills the modules.</summary>
    public void StartUnshard()
    {
        if (IsUnsharded || pendingGather is not null)
        {
            return;
        }

        var tasks = new List<Task>(2);
        gatheredFloat = Gather(SlotBuffer.Float, FloatChunk, ScalarType.Float32, tasks);
        gatheredByte = Gather(SlotBuffer.Byte, ByteChunk, ScalarType.Byte, tasks);
        pendingGather = Task.WhenAll(tasks);
    }

    /// <summary>Waits for the all-gathers and puts every whole tensor into its module.</summary>
    public void FinishUnshard()
    {
        if (IsUnsharded)
        {
            return;
        }

        StartUnshard();
        try
        {
            pendingGather!.GetAwaiter().GetResult();
            foreach (var s in Slots)
            {
                s.Fill(s.Buffer == SlotBuffer.Float ? gatheredFloat! : gatheredByte!, s.Buffer == SlotBuffer.Float ? FloatChunk : ByteChunk);
            }

            IsUnsharded = true;
        }
        finally
        {
            pendingGather = null;
            gatheredFloat?.Dispose();
            gatheredByte?.Dispose();
            gatheredFloat = gatheredByte = null;
        }
    }

    /// <summary>Frees the whole tensors, keeping only this rank's shards.</summary>
    public void Reshard()
    {
        if (!IsUnsharded)
        {
            return;
        }

        foreach (var s in Slots)
        {
            s.Release();
        }

        IsUnsharded = false;
    }

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
                    var n = s.Local.numel();
                    var shard = output.narrow(0, s.GradOffset, n).clone().DetachFromDisposeScope();
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

    private Tensor? Gather(SlotBuffer kind, long chunk, ScalarType dtype, List<Task> tasks)
    {
        if (chunk == 0)
        {
            return null;
        }

        var send = zeros(chunk, dtype, device).DetachFromDisposeScope();
        foreach (var s in Slots.Where(s => s.Buffer == kind))
        {
            s.Pack(send);
        }

        var recv = empty(comm.WorldSize * chunk, dtype, device).DetachFromDisposeScope();
        tasks.Add(comm.AllGatherAsync(recv, send).ContinueWith(t =>
        {
            send.Dispose();
            t.GetAwaiter().GetResult();
        }, TaskScheduler.Default));
        return recv;
    }
}
