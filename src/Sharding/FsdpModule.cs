using BnbDist.Collectives;
using BnbDist.Sharding.Checkpoints;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// The handle of a sharded module (FSDP2's <c>FSDPModule</c>). The root's handle drives a training step: its
/// <see cref="Parameters"/> are what the optimizer updates, <see cref="Backward"/> finishes a step, and
/// <see cref="ShardedState"/> is what a checkpoint saves.
/// </summary>
public sealed class FsdpModule
{
    private readonly List<FsdpModule> children = [];
    private readonly List<FsdpParamGroup> forwardOrder = [];
    private List<(string Prefix, FsdpParamGroup Group)>? allGroups;
    private bool orderRecorded;
    private int noSyncDepth;

    internal FsdpModule(nn.Module module, ICommunicator comm, FullyShardOptions options, FsdpParamGroup group,
        IReadOnlyList<(string Name, FsdpModule Handle)> children, Device device)
    {
        Module = module;
        Device = device;
        Communicator = comm;
        Options = options;
        Group = group;
        foreach (var (_, child) in children)
        {
            child.Parent = this;
            this.children.Add(child);
        }

        group.Reshard();
        Hookable = module is nn.Module<Tensor, Tensor>;
        if (module is nn.Module<Tensor, Tensor> hookable)
        {
            hookable.register_forward_pre_hook((_, input) => PreForward(input));
            hookable.register_forward_hook((_, _, output) => PostForward(output));
        }
    }

    /// <summary>The sharded module.</summary>
    public nn.Module Module { get; }

    /// <summary>The process group the shards live on.</summary>
    public ICommunicator Communicator { get; }

    /// <summary>Where the shards live (the device of the module's parameters at wrap time).</summary>
    public Device Device { get; }

    /// <summary>Options given at wrap time.</summary>
    public FullyShardOptions Options { get; }

    /// <summary>Whether this is the outermost sharded module (the one that drives steps).</summary>
    public bool IsRoot => Parent is null;

    /// <summary>Bytes of every tensor this rank keeps for the whole model (shards only, padding excluded).</summary>
    public long LocalBytes => Root.Groups.Sum(g => g.Group.Slots.Sum(s => s.LocalBytes));

    /// <summary>Bytes of the whole (unsharded) tensors in the shards' dtypes: what one process would hold.</summary>
    public long FullBytes => Root.Groups.Sum(g => g.Group.Slots.Sum(s => s.Length * s.Local.element_size()));

    /// <summary>Bytes of every rank's padded shards (the per-rank share of the communication buffers).</summary>
    public long PaddedLocalBytes => Root.Groups.Sum(g => g.Group.Slots.Sum(s => s.PaddedLength * s.Local.element_size()));

    /// <summary>Bytes of one atom of every tensor: the padding a rank can carry is at most this.</summary>
    public long AtomBytes => Root.Groups.Sum(g => g.Group.Slots.Sum(s => s.UnitsPerAtom * s.Local.element_size()));

    /// <summary>Bytes one step's unshards move onto this rank over the wire (all blocks, padding included).</summary>
    public long GatheredBytesPerStep => Root.Groups.Sum(g => g.Group.GatheredBytesPerUnshard);

    /// <summary>
    /// Bytes received by all-gathers on this rank since wrapping, over the whole model (padding included): unlike
    /// <see cref="GatheredBytesPerStep"/>, it counts what actually ran, e.g. the quantized weights gathered again
    /// before backward. Take differences around a step to measure it.
    /// </summary>
    public long GatheredBytesTotal => Root.Groups.Sum(g => g.Group.GatheredBytesTotal);

    internal FsdpModule? Parent { get; private set; }

    internal bool HasChildren => children.Count > 0;

    internal FsdpParamGroup Group { get; }

    private bool Hookable { get; }

    private FsdpModule Root => Parent is null ? this : Parent.Root;

    /// <summary>Every group of the tree under this root with its module-path prefix, root first, then blocks in model order.</summary>
    private List<(string Prefix, FsdpParamGroup Group)> Groups => allGroups ??= CollectGroups();

    /// <summary>The f32 master shards of the trainable tensors (build the optimizer over these).</summary>
    public IReadOnlyList<Parameter> Parameters() => NamedParameters().Select(p => p.Parameter).ToList();

    /// <summary>The master shards by the whole tensor's name (e.g. <c>layers.0.self_attn.q_proj.lora_A.weight</c>).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedParameters()
    {
        RequireRoot(nameof(NamedParameters));
        return Groups.SelectMany(g => g.Group.Slots.Where(s => s.Trainable).Select(s => (g.Prefix + s.Name, s.Master!))).ToList();
    }

    /// <summary>
    /// The whole element count of each master shard's tensor, for optimizer decisions that must not depend on the
    /// world size (bitsandbytes keeps 32-bit state below 4096 elements: use this count, not the shard's).
    /// </summary>
    public IReadOnlyDictionary<Parameter, long> FullElementCounts() =>
        Groups.SelectMany(g => g.Group.Slots.Where(s => s.Trainable)).ToDictionary(s => s.Master!, s => s.Length);

    /// <summary>Gathers every block's whole tensors into the modules (what the hooks do block by block).</summary>
    public void Unshard()
    {
        foreach (var (_, g) in Groups)
        {
            g.StartUnshard();
        }

        foreach (var (_, g) in Groups)
        {
            g.FinishUnshard();
        }
    }

    /// <summary>Frees every whole tensor, keeping only this rank's shards.</summary>
    public void Reshard()
    {
        foreach (var (_, g) in Groups)
        {
            g.Reshard();
        }
    }

    /// <summary>
    /// Finishes a training step's backward: runs <paramref name="loss"/>.backward(), then (unless inside
    /// <see cref="NoSync"/>) reduce-scatters every trainable gradient into the master shards and reshards.
    /// </summary>
    public void Backward(Tensor loss)
    {
        ArgumentNullException.ThrowIfNull(loss);
        RequireRoot(nameof(Backward));
        loss.backward();
        SyncGradients();
    }

    /// <summary>
    /// Reduce-scatters the whole gradients left by a backward into the master shards (averaged over ranks by default)
    /// and reshards; does nothing inside <see cref="NoSync"/>, where gradients keep accumulating unsharded.
    /// </summary>
    public void SyncGradients()
    {
        RequireRoot(nameof(SyncGradients));
        if (noSyncDepth > 0)
        {
            return;
        }

        var pending = new List<Task>();
        foreach (var (_, g) in Enumerable.Reverse(Groups))
        {
            pending.Add(g.ReduceGradientsAsync(Options.AverageGradients));
        }

        Task.WaitAll([.. pending]);
        Reshard();
    }

    /// <summary>Gradient accumulation without communication (FSDP's <c>no_sync</c>): dispose the scope to sync again.</summary>
    public IDisposable NoSync()
    {
        RequireRoot(nameof(NoSync));
        noSyncDepth++;
        return new Scope(() => noSyncDepth--);
    }

    /// <summary>
    /// Clips the gradients of all master shards by their global L2 norm (one all-reduce), like
    /// <c>clip_grad_norm_</c> on the unsharded model; returns the norm before clipping.
    /// </summary>
    public double ClipGradNorm(double maxNorm)
    {
        RequireRoot(nameof(ClipGradNorm));
        if (!double.IsFinite(maxNorm) || maxNorm <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "must be a positive finite number.");
        }

        var grads = Parameters().Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        var device = Device;
        using var scope = NewDisposeScope();
        var sq = zeros(1, ScalarType.Float64, device);
        foreach (var g in grads)
        {
            sq.add_(g.to_type(ScalarType.Float64).square().sum());
        }

        var f32 = sq.to_type(ScalarType.Float32);
        Communicator.AllReduce(f32, ReduceOp.Sum);
        var norm = Math.Sqrt(f32.cpu().item<float>());
        var coef = maxNorm / (norm + 1e-6);
        if (coef < 1)
        {
            using var noGrad = no_grad();
            foreach (var g in grads)
            {
                g.mul_(coef);
            }
        }

        return norm;
    }

    /// <summary>This rank's shards of every tensor of the model, named by the whole tensor's name (for checkpoints).</summary>
    public IReadOnlyList<ShardedTensor> ShardedState()
    {
        RequireRoot(nameof(ShardedState));
        return Groups.SelectMany(g => g.Group.Slots.Select(s =>
            new ShardedTensor(g.Prefix + s.Name, s.Local, s.Shape, s.Layout, s.UnitsPerAtom, s.Rank))).ToList();
    }

    /// <summary>
    /// The small tensors every rank holds whole and equal, by name; rank 0's copy is what a checkpoint saves: the model's
    /// double-quant offsets, and metadata that makes a checkpoint readable without the model (new CPU tensors each call):
    /// each 4-bit layer's <c>weight.quant_map</c>, <c>weight.nested_quant_map</c> and packed
    /// <c>weight.quant_state.bitsandbytes__nf4|fp4</c> (bitsandbytes' keys), and <see cref="ModelMetadata.TensorName"/>
    /// (float parameters' dtypes, LoRA settings).
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ReplicatedState()
    {
        RequireRoot(nameof(ReplicatedState));
        var result = ReplicatedTargets().ToDictionary(r => r.Name, r => r.Tensor);
        foreach (var (prefix, group) in Groups)
        {
            foreach (var (layerPrefix, layer) in group.Quantized)
            {
                foreach (var (key, value) in layer.QuantState!.PackedMetadata())
                {
                    result[prefix + layerPrefix + "weight." + key] = value;
                }
            }
        }

        result[ModelMetadata.TensorName] = tensor(ModelMetadata.Of(this).ToBytes(), ScalarType.Byte);
        return result;
    }

    /// <summary>
    /// Copies shards (as <see cref="ShardedState"/> names them) into this rank's shards and the replicated tensors (as
    /// <see cref="ReplicatedState"/> names them) into the model; the model is resharded.
    /// </summary>
    /// <exception cref="ShardingException">A tensor is missing, unknown or of the wrong size or dtype.</exception>
    public void LoadShardedState(IReadOnlyDictionary<string, Tensor> shards, IReadOnlyDictionary<string, Tensor> replicated)
    {
        ArgumentNullException.ThrowIfNull(shards);
        ArgumentNullException.ThrowIfNull(replicated);
        RequireRoot(nameof(LoadShardedState));
        Reshard();
        using (no_grad())
        {
            // Only the model's own tensors are copied; the metadata entries describe the checkpoint, not the model.
            foreach (var (name, target) in ReplicatedTargets())
            {
                if (!replicated.TryGetValue(name, out var value) || value.numel() != target.numel())
                {
                    throw new ShardingException($"replicated tensor {name} is missing or not {target.numel()} elements.");
                }

                target.copy_(value.reshape(target.shape));
            }
        }

        var slots = Groups.SelectMany(g => g.Group.Slots.Select(s => (Name: g.Prefix + s.Name, Slot: s))).ToList();
        var unknown = shards.Keys.Except(slots.Select(s => s.Name)).FirstOrDefault();
        if (unknown is not null)
        {
            throw new ShardingException($"shard {unknown} does not belong to this model.");
        }

        using var noGrad = no_grad();
        foreach (var (name, slot) in slots)
        {
            if (!shards.TryGetValue(name, out var t))
            {
                throw new ShardingException($"shard {name} is missing.");
            }

            if (t.numel() != slot.Local.numel() || t.dtype != slot.Local.dtype)
            {
                throw new ShardingException($"shard {name} must be {slot.Local.dtype} with {slot.Local.numel()} elements on rank {slot.Rank}; got {t.dtype} with {t.numel()}.");
            }

            slot.Local.copy_(t.reshape(-1));
        }
    }

    private Tensor PreForward(Tensor input)
    {
        var root = Root;
        if (IsRoot)
        {
            FullyShard.ThrowIfBlockWithoutRoot(this);

            // Blocks whose forward cannot be hooked are gathered with the root.
            var now = Groups.Where(g => ReferenceEquals(g.Group, Group) || !HookableGroup(g.Group)).Select(g => g.Group).ToList();
            now.ForEach(g => g.StartUnshard());
            now.ForEach(g => g.FinishUnshard());
            return input;
        }

        Group.FinishUnshard();
        if (!root.orderRecorded)
        {
            root.forwardOrder.Add(Group);
        }
        else if (Options.Prefetch)
        {
            var i = root.forwardOrder.IndexOf(Group);
            if (i >= 0 && i + 1 < root.forwardOrder.Count)
            {
                root.forwardOrder[i + 1].StartUnshard();
            }
        }

        // Free this block's quantized weights once its backward is done (the gradient of its input is its last product).
        return ReshardsAfterForward && input.requires_grad ? BackwardHook.Apply(input, Group.ReshardQuantized) : input;
    }

    private Tensor PostForward(Tensor output)
    {
        if (IsRoot)
        {
            orderRecorded = orderRecorded || forwardOrder.Count > 0;
            if (!is_grad_enabled())
            {
                // Inference: nothing will run backward, so nothing needs the whole tensors any more.
                Reshard();
            }

            return output;
        }

        if (!ReshardsAfterForward && is_grad_enabled())
        {
            return output;
        }

        Group.ReshardQuantized();
        return is_grad_enabled() && output.requires_grad ? BackwardHook.Apply(output, PreBackward) : output;
    }

    /// <summary>Just before this block's backward: gather its quantized weights again, and prefetch the block before it.</summary>
    private void PreBackward()
    {
        Group.FinishUnshard(quantizedOnly: true);
        var order = Root.forwardOrder;
        var i = order.IndexOf(Group);
        if (Options.Prefetch && i > 0)
        {
            order[i - 1].StartUnshard(quantizedOnly: true);
        }
    }

    private bool ReshardsAfterForward => Options.ReshardAfterForward && Group.HasQuantized;

    private bool HookableGroup(FsdpParamGroup g) => FindHandle(g)?.Hookable ?? false;

    private FsdpModule? FindHandle(FsdpParamGroup g) =>
        ReferenceEquals(Group, g) ? this : children.Select(c => c.FindHandle(g)).FirstOrDefault(h => h is not null);

    private List<(string Prefix, FsdpParamGroup Group)> CollectGroups()
    {
        var result = new List<(string, FsdpParamGroup)> { (string.Empty, Group) };
        var paths = Module.named_modules().ToList();
        foreach (var child in children)
        {
            var path = paths.First(p => ReferenceEquals(p.module, child.Module)).name;
            result.AddRange(child.CollectGroups().Select(g => (path + "." + g.Prefix, g.Group)));
        }

        return result;
    }

    /// <summary>Every float parameter's full name and module dtype (its shard is f32).</summary>
    internal IEnumerable<(string Name, ScalarType DType)> FloatSlots() =>
        Groups.SelectMany(g => g.Group.Slots.Where(s => s.Buffer == SlotBuffer.Params).Select(s => (g.Prefix + s.Name, s.DType)));

    private IEnumerable<(string Name, Tensor Tensor)> ReplicatedTargets() =>
        Groups.SelectMany(g => g.Group.Replicated.Select(r => (g.Prefix + r.Name, r.Tensor)));

    private void RequireRoot(string operation)
    {
        if (!IsRoot)
        {
            throw new ShardingException($"{operation} must be called on the root's handle (the module sharded last), not on block {Module.GetName()}.");
        }
    }

    private sealed class Scope(Action onDispose) : IDisposable
    {
        private Action? onDispose = onDispose;

        public void Dispose()
        {
            onDispose?.Invoke();
            onDispose = null;
        }
    }
}
