using System.Runtime.CompilerServices;
using BnbDist.Collectives;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// FSDP2's <c>fully_shard</c> for TorchSharp modules: apply it to each block (e.g. every transformer layer), then to the
/// root. Each application shards the tensors of that module not already owned by a sharded block: 4-bit weights with
/// their absmax and nested statistics on whole quantization blocks, float parameters on 256-element optimizer blocks.
/// </summary>
/// <remarks>
/// After wrapping, build the optimizer over <see cref="FsdpModule.Parameters"/> of the root (the f32 master shards),
/// run forward through <c>.call(...)</c> (hooks unshard each block just before it runs, prefetching the next), and
/// finish each step with <see cref="FsdpModule.Backward"/> (backward, gradient reduce-scatter into the shards,
/// reshard). Ranks must wrap the same model the same way; a difference raises on every rank, naming the tensor.
/// </remarks>
public static class FullyShard
{
    private static readonly ConditionalWeakTable<nn.Module, FsdpModule> Wrapped = new();
    private static readonly List<WeakReference<FsdpModule>> ApplyOrder = [];

    /// <summary>Shards <paramref name="module"/> across the ranks of <paramref name="comm"/> and returns its handle.</summary>
    /// <exception cref="ShardingException">The module is already sharded, is inside a sharded module (apply bottom-up),
    /// holds tensors that cannot be sharded, or the ranks disagree on what it holds.</exception>
    public static FsdpModule Apply(nn.Module module, ICommunicator comm, FullyShardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(comm);
        options ??= new FullyShardOptions();
        if (Wrapped.TryGetValue(module, out _))
        {
            throw new ShardingException($"module {module.GetName()} is already sharded.");
        }

        var descendants = module.named_modules().ToList();
        foreach (var (_, existing) in Wrapped)
        {
            if (existing.Module.named_modules().Any(m => ReferenceEquals(m.module, module)))
            {
                throw new ShardingException($"module {module.GetName()} is inside the already sharded {existing.Module.GetName()}; apply FullyShard bottom-up (blocks first, the root last).");
            }
        }

        // Directly owned blocks: wrapped descendants that are not inside another wrapped descendant.
        var wrappedBelow = descendants.Where(d => Wrapped.TryGetValue(d.module, out _)).ToList();
        var children = wrappedBelow
            .Where(d => !wrappedBelow.Any(o => o.name != d.name && d.name.StartsWith(o.name + ".", StringComparison.Ordinal)))
            .Select(d => (d.name, handle: Wrapped.TryGetValue(d.module, out var h) ? h : throw new InvalidOperationException()))
            .ToList();
        if (children.Any(c => c.handle.Parent is not null))
        {
            throw new ShardingException("a sharded block already belongs to another sharded module.");
        }

        var excluded = new HashSet<nn.Module>(wrappedBelow.Select(d => d.module), ReferenceEqualityComparer.Instance);
        var device = FirstDevice(module);
        var (specs, replicated, quantized) = SlotDiscovery.Discover(module, excluded);
        ShardFingerprint.Verify(comm, specs.Select(s => s.Describe()).ToList(), $"the tensors of {module.GetName()}", device);
        if (options.SyncModuleStates && comm.WorldSize > 1)
        {
            // Identical structure is verified above; now make the contents identical too (rank 0's), then slice.
            using var noGrad = no_grad();
            foreach (var t in specs.Select(s => s.Target).Concat(replicated.Select(r => r.Tensor)))
            {
                comm.Broadcast(t, 0);
            }
        }

        var slots = specs.Select(s => new ShardSlot(s.Name, s.Target, s.UnitsPerAtom, comm.Rank, comm.WorldSize, s.Trainable, s.Quantized)).ToList();
        var group = new FsdpParamGroup(module.GetName(), slots, replicated, quantized, comm, device);
        var handle = new FsdpModule(module, comm, options, group, children, device);
        Wrapped.Add(module, handle);
        lock (ApplyOrder)
        {
            ApplyOrder.RemoveAll(w => !w.TryGetTarget(out _));
            ApplyOrder.Add(new WeakReference<FsdpModule>(handle));
        }

        return handle;
    }

    /// <summary>
    /// A block sharded on its own, with a later parentless module on the same process group, is a block whose model
    /// root was never sharded (FSDP needs the root wrapped to drive steps): refuse its forward rather than train it
    /// with gradients nobody reduces.
    /// </summary>
    internal static void ThrowIfBlockWithoutRoot(FsdpModule handle)
    {
        if (handle.HasChildren)
        {
            return;
        }

        lock (ApplyOrder)
        {
            var i = ApplyOrder.FindIndex(w => w.TryGetTarget(out var h) && ReferenceEquals(h, handle));
            var laterRoot = ApplyOrder.Skip(i + 1).Any(w => w.TryGetTarget(out var h) && h.IsRoot && ReferenceEquals(h.Communicator, handle.Communicator));
            if (i >= 0 && laterRoot)
            {
                throw new ShardingException($"module {handle.Module.GetName()} was sharded as a block, but the model containing it was not: call FullyShard.Apply on the model's root after its blocks, then run forward through the root.");
            }
        }
    }

    /// <summary>Whether <paramref name="module"/> has been sharded.</summary>
    public static bool IsSharded(nn.Module module) => Wrapped.TryGetValue(module, out _);

    private static Device FirstDevice(nn.Module module) =>
        module.parameters().Select(p => p.device).FirstOrDefault() ?? CPU;
}
