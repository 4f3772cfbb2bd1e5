using BnbDist.Optim8bit;
using BnbDist.Optim8bit.Config;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// Ties a bitsandbytes-style optimizer to a sharded model: each rank's optimizer updates only its master shards, and
/// because shards start on 256-element boundaries its 8-bit blocks are exactly the unsharded run's blocks (no absmax
/// crosses ranks). This class sets the per-shard decisions that must follow the whole tensor (8-bit or 32-bit state),
/// checks that every rank configured the same optimizer, and exposes the state as shards for checkpoints.
/// </summary>
public static partial class ShardedOptimizer
{
    /// <summary>
    /// Makes the optimizer's 8-bit-or-32-bit choice for each master shard follow the whole tensor's size (bitsandbytes
    /// keeps 32-bit state below <paramref name="minBlockwise8bitSize"/> elements), so the decision and the state match
    /// one unsharded process whatever the world size. Call before building the optimizer.
    /// </summary>
    public static void ConfigureStateBits(FsdpModule root, GlobalOptimManager manager, int optimBits = 8, int minBlockwise8bitSize = 4096)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(manager);
        foreach (var (p, full) in root.FullElementCounts())
        {
            var use8bit = optimBits == 8 && full >= minBlockwise8bitSize;
            manager.OverrideConfig(p, "optim_bits", use8bit ? 8 : 32);
            // The shard itself may be small (or empty): the whole tensor already passed the size test.
            manager.OverrideConfig(p, "min_8bit_size", 0);
        }
    }

    /// <summary>Raises on every rank, naming the first differing parameter, unless all ranks' optimizers have the same effective config.</summary>
    public static void VerifySameConfig(FsdpModule root, Optimizer8bit optimizer)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(optimizer);
        var names = root.NamedParameters().ToDictionary(p => p.Parameter, p => p.Name);
        var fingerprint = optimizer.ConfigFingerprint();
        // A shard's shape depends on the rank; everything else (state bits, hyperparameters) must agree.
        var lines = fingerprint.Parameters.Select((line, i) => $"{NameAt(optimizer, names, i)}: {ShapePart().Replace(line, string.Empty)}")
            .Prepend(fingerprint.Optimizer).ToList();
        ShardFingerprint.Verify(root.Communicator, lines, "the optimizer configuration", root.Device);
    }

    /// <summary>This rank's optimizer state as shards (8-bit codes and 32-bit moments by element, absmax by block).</summary>
    /// <returns>The sharded state tensors and the replicated ones (code books, step counts).</returns>
    public static (List<ShardedTensor> Sharded, Dictionary<string, Tensor> Replicated) State(FsdpModule root, Optimizer8bit optimizer)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(optimizer);
        var sharded = new List<ShardedTensor>();
        var replicated = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, master, shard) in Masters(root))
        {
            var state = optimizer.StateOf(master);
            replicated[$"optim.{name}.step"] = tensor(new[] { state.Step });
            foreach (var (key, t) in state.StateTensors())
            {
                var id = $"optim.{name}.{key}";
                if (key.StartsWith("qmap", StringComparison.Ordinal))
                {
                    replicated[id] = t;
                }
                else if (key.StartsWith("absmax", StringComparison.Ordinal))
                {
                    sharded.Add(new ShardedTensor(id, t, [(shard.Length + SlotDiscovery.FloatAtom - 1) / SlotDiscovery.FloatAtom], shard.Layout, 1, shard.Rank));
                }
                else
                {
                    sharded.Add(new ShardedTensor(id, t, [shard.Length], shard.Layout, SlotDiscovery.FloatAtom, shard.Rank));
                }
            }
        }

        return (sharded, replicated);
    }

    /// <summary>Restores the state <see cref="State"/> produced (possibly resharded to this world size) into the optimizer.</summary>
    /// <param name="root">The sharded model the optimizer updates.</param>
    /// <param name="optimizer">The optimizer built over <paramref name="root"/>'s master shards.</param>
    /// <param name="sharded">This rank's slices by name.</param>
    /// <param name="replicated">The replicated tensors by name.</param>
    public static void Load(FsdpModule root, Optimizer8bit optimizer, IReadOnlyDictionary<string, Tensor> sharded,
        IReadOnlyDictionary<string, Tensor> replicated)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(sharded);
        ArgumentNullException.ThrowIfNull(replicated);
        foreach (var (name, master, _) in Masters(root))
        {
            if (!replicated.TryGetValue($"optim.{name}.step", out var stepTensor))
            {
                throw new ShardingException($"optimizer state of {name} is missing from the checkpoint.");
            }

            var prefix = $"optim.{name}.";
            var tensors = sharded.Concat(replicated)
                .Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal) && kv.Key != prefix + "step")
                .ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value, StringComparer.Ordinal);
            optimizer.StateOf(master).LoadStateTensors(stepTensor.item<long>(), tensors.Count == 0 ? null : tensors);
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@" shape=\[[^\]]*\]")]
    private static partial System.Text.RegularExpressions.Regex ShapePart();

    private static IEnumerable<(string Name, TorchSharp.Modules.Parameter Master, ShardedTensor Shard)> Masters(FsdpModule root)
    {
        var shards = root.ShardedState().ToDictionary(s => s.Name);
        return root.NamedParameters().Select(p => (p.Name, p.Parameter, shards[p.Name]));
    }

    private static string NameAt(Optimizer8bit optimizer, Dictionary<TorchSharp.Modules.Parameter, string> names, int index)
    {
        var state = optimizer.States[index];
        return names.FirstOrDefault(kv => ReferenceEquals(optimizer.StateOf(kv.Key), state)).Value ?? $"parameter {index}";
    }
}
