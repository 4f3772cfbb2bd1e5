using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>Which flat communication buffer a slot travels in.</summary>
internal enum SlotBuffer
{
    /// <summary>f32: float parameters (any float dtype, held as f32 shards).</summary>
    Params,

    /// <summary>u8: packed 4-bit weights and double-quantized absmax codes.</summary>
    QuantBytes,

    /// <summary>f32: quantization statistics (nested absmax, or absmax without double quant).</summary>
    QuantStats,
}

/// <summary>
/// One sharded tensor of a module: the module's own tensor object (<see cref="Target"/>, a parameter or a QuantState
/// statistic), which holds the whole tensor while unsharded and nothing while sharded, and this rank's slice of it
/// (<see cref="Local"/>), which is what stays resident, what the optimizer updates and what checkpoints save.
/// </summary>
/// <remarks>
/// The whole tensor is put back into <see cref="Target"/> with <c>set_</c>, so modules, QuantStates and autograd keep
/// referring to the same tensor objects; nothing in the model has to be rebuilt or re-registered to shard it.
/// </remarks>
internal sealed class ShardSlot
{
    public ShardSlot(string name, Tensor target, long unitsPerAtom, int rank, int worldSize, bool trainable, bool quantized)
    {
        Name = name;
        Target = target;
        Shape = target.shape;
        DType = target.dtype;
        Device = target.device;
        UnitsPerAtom = unitsPerAtom;
        Rank = rank;
        Buffer = !quantized ? SlotBuffer.Params : IsBytes(DType) ? SlotBuffer.QuantBytes : SlotBuffer.QuantStats;
        Layout = ShardLayout.ForLength(Length, unitsPerAtom, worldSize);
        Range = Layout.Slice(rank, Length, unitsPerAtom);
        Trainable = trainable;

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var slice = target.detach().reshape(-1).narrow(0, Range.Start, Range.Length);
        var local = (IsBytes(DType) ? slice : slice.to_type(ScalarType.Float32)).clone();
        if (trainable)
        {
            Master = new Parameter(local.DetachFromDisposeScope(), requires_grad: true);
            Local = Master;
        }
        else
        {
            Local = local.DetachFromDisposeScope();
        }
    }

    /// <summary>Fully qualified name (module path + tensor name, e.g. <c>layers.0.q_proj.weight.absmax</c>).</summary>
    public string Name { get; }

    /// <summary>The module's tensor object that is filled on unshard and emptied on reshard.</summary>
    public Tensor Target { get; }

    /// <summary>Shape of the whole tensor.</summary>
    public long[] Shape { get; }

    /// <summary>dtype of the whole tensor (compute dtype for float parameters).</summary>
    public ScalarType DType { get; }

    /// <summary>Device of the whole tensor and of the shard.</summary>
    public Device Device { get; }

    /// <summary>Elements of the whole tensor.</summary>
    public long Length => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Elements per atom (a quantization or optimizer block group that never straddles ranks).</summary>
    public long UnitsPerAtom { get; }

    /// <summary>This rank.</summary>
    public int Rank { get; }

    /// <summary>How the tensor is split across ranks.</summary>
    public ShardLayout Layout { get; }

    /// <summary>The elements this rank holds.</summary>
    public ShardRange Range { get; }

    /// <summary>Every rank's padded slice length (the slot's share of a flat communication chunk).</summary>
    public long PaddedLength => Layout.PaddedSliceLength(UnitsPerAtom);

    /// <summary>Which flat buffer the slot travels in.</summary>
    public SlotBuffer Buffer { get; }

    /// <summary>Offset of the slot inside every rank's chunk of its buffer (assigned by the group).</summary>
    public long Offset { get; set; }

    /// <summary>Offset of the slot inside every rank's chunk of the gradient buffer (trainable slots).</summary>
    public long GradOffset { get; set; }

    /// <summary>Whether the tensor is trained (its shard is an optimizer parameter and receives reduced gradients).</summary>
    public bool Trainable { get; }

    /// <summary>This rank's slice: f32 for float tensors, u8 or int8 for bytes; 1-D, unpadded.</summary>
    public Tensor Local { get; }

    /// <summary>The f32 master shard the optimizer updates (same object as <see cref="Local"/>), for trainable slots.</summary>
    public Parameter? Master { get; }

    /// <summary>Bytes this rank keeps for the slot.</summary>
    public long LocalBytes => Local.numel() * Local.element_size();

    /// <summary>Rebuilds the whole tensor from every rank's chunk of a gathered flat buffer and puts it into <see cref="Target"/>.</summary>
    public void Fill(Tensor gathered, long chunk)
    {
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>(Layout.WorldSize);
        for (var r = 0; r < Layout.WorldSize; r++)
        {
            var len = Layout.Slice(r, Length, UnitsPerAtom).Length;
            if (len > 0)
            {
                parts.Add(gathered.narrow(0, (r * chunk) + Offset, len));
            }
        }

        var whole = parts.Count == 0 ? empty(0, gathered.dtype, Device) : cat(parts, 0);
        // cat always allocates its result (never a view of the gathered buffer), so no further copy is needed.
        var typed = whole.dtype == DType ? whole : whole.to_type(DType);
        var full = typed.reshape(Shape).DetachFromDisposeScope();
        using (no_grad())
        {
            Target.set_(full);
        }

        full.Dispose();
    }

    /// <summary>
    /// u8 and int8 tensors keep their dtype and travel in the u8 buffer: copying int8 into u8 and back converts modulo
    /// 256 (C casts, as libtorch does), so every byte survives the trip unchanged.
    /// </summary>
    private static bool IsBytes(ScalarType dtype) => dtype is ScalarType.Byte or ScalarType.Int8;

    /// <summary>Releases the whole tensor (the module keeps a 0-element tensor of the same dtype and device).</summary>
    public void Release()
    {
        using var noGrad = no_grad();
        using var nothing = empty(0, DType, Device);
        Target.set_(nothing);
        if (Target.requires_grad)
        {
            Target.grad = null;
        }
    }

    /// <summary>Writes this rank's slice into its place in a flat send buffer (padding stays as the buffer had it).</summary>
    public void Pack(Tensor chunk)
    {
        if (Local.numel() > 0)
        {
            using var noGrad = no_grad();
            chunk.narrow(0, Offset, Local.numel()).copy_(Local.detach());
        }
    }
}
