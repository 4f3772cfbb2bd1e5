using BnbDist.Nn;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>A tensor a group will shard, found before anything is sliced (so ranks can be compared first).</summary>
internal sealed record SlotSpec(string Name, Tensor Target, long UnitsPerAtom, bool Trainable, bool Quantized = false)
{
    public string Describe() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{Name} [{string.Join(',', Target.shape)}] {Target.dtype} atom={UnitsPerAtom} trainable={Trainable}");
}

/// <summary>Finds the tensors of one block that its group shards, in a fixed order, and how each is cut into atoms.</summary>
internal static class SlotDiscovery
{
    /// <summary>Elements per atom of float parameters: the 8-bit optimizers' state block, so no block straddles two ranks.</summary>
    public const long FloatAtom = 256;

    /// <summary>
    /// The tensors of <paramref name="module"/> and its descendants, except those under <paramref name="excluded"/>
    /// (blocks that have their own group), and the replicated tensors that must agree across ranks (double-quant
    /// offsets), and the 4-bit layers by module path prefix (whose quantization metadata checkpoints record).
    /// Tensors seen twice (tied weights) are sharded once.
    /// </summary>
    public static (List<SlotSpec> Slots, List<(string Name, Tensor Tensor)> Replicated, List<(string Prefix, Linear4bit Layer)> Quantized) Discover(
        nn.Module module, ISet<nn.Module> excluded)
    {
        var slots = new List<SlotSpec>();
        var replicated = new List<(string, Tensor)>();
        var quantized = new List<(string, Linear4bit)>();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        Walk(module, string.Empty, excluded, slots, replicated, quantized, seen);
        return (slots, replicated, quantized);
    }

    private static void Walk(nn.Module module, string prefix, ISet<nn.Module> excluded, List<SlotSpec> slots,
        List<(string Name, Tensor Tensor)> replicated, List<(string Prefix, Linear4bit Layer)> quantized, HashSet<Tensor> seen)
    {
        var isQuantized = module is Linear4bit or Linear8bitLt;
        if (module is Linear4bit q)
        {
            AddQuantized(q, prefix, slots, replicated, seen);
            quantized.Add((prefix, q));
        }
        else if (module is Linear8bitLt q8)
        {
            AddInt8(q8, prefix, slots, seen);
        }

        foreach (var (name, p) in module.named_parameters(recurse: false))
        {
            if ((isQuantized && name == "weight") || !seen.Add(p))
            {
                continue;
            }

            if (!p.is_floating_point())
            {
                throw new ShardingException($"parameter {prefix}{name} is {p.dtype}; only float parameters and Linear4bit weights can be sharded.");
            }

            slots.Add(new SlotSpec(prefix + name, p, FloatAtom, p.requires_grad));
        }

        foreach (var (name, child) in module.named_children())
        {
            if (!excluded.Contains(child))
            {
                Walk(child, prefix + name + ".", excluded, slots, replicated, quantized, seen);
            }
        }
    }

    private static void AddQuantized(Linear4bit layer, string prefix, List<SlotSpec> slots, List<(string Name, Tensor Tensor)> replicated, HashSet<Tensor> seen)
    {
        layer.Quantize();
        var state = layer.QuantState!;
        // One atom = one nested-statistics block of absmax (or 256 blocks without double quant): packed bytes, absmax
        // codes and the nested absmax of an atom then all live on one rank.
        var blocksPerAtom = state.State2?.BlockSize ?? 256;
        var elementsPerAtom = (long)state.BlockSize * blocksPerAtom;
        seen.Add(layer.Weight);
        slots.Add(new SlotSpec(prefix + "weight", layer.Weight, elementsPerAtom / 2, Trainable: false, Quantized: true));
        slots.Add(new SlotSpec(prefix + "weight.absmax", state.Absmax, blocksPerAtom, Trainable: false, Quantized: true));
        if (state.State2 is { } nested)
        {
            slots.Add(new SlotSpec(prefix + "weight.nested_absmax", nested.Absmax, 1, Trainable: false, Quantized: true));
            replicated.Add((prefix + "weight.nested_offset", state.Offset!));
        }
    }

    private static void AddInt8(Linear8bitLt layer, string prefix, List<SlotSpec> slots, HashSet<Tensor> seen)
    {
        if (layer.HasFp16Weights)
        {
            throw new ShardingException($"{Describe(prefix)} is a Linear8bitLt with trainable fp16 weights (re-quantized every forward); FullyShard shards frozen int8 layers (hasFp16Weights: false).");
        }

        layer.Quantize();
        // One atom = one output row: its int8 weights and its SCB (row absmax) live on the same rank.
        seen.Add(layer.Weight);
        slots.Add(new SlotSpec(prefix + "weight", layer.Weight, layer.InFeatures, Trainable: false, Quantized: true));
        slots.Add(new SlotSpec(prefix + "SCB", layer.SCB!, 1, Trainable: false, Quantized: true));
    }

    private static string Describe(string prefix) => prefix.Length == 0 ? "the module" : "module " + prefix.TrimEnd('.');
}
