using BnbDist.Nn.Surgery;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// How sharded checkpoint names map to Hugging Face keys. Sharded names are the model's own (FullyShard's): a LoRA layer
/// <c>L</c> holds its base under <c>L.base_layer.</c> and its adapter as <c>L.lora_A.weight</c>/<c>L.lora_B.weight</c>.
/// A Hugging Face base model has the base's tensors under <c>L.</c>; peft's adapter file has
/// <c>base_model.model.L.lora_A.weight</c>. A 4-bit layer <c>Q</c> has bitsandbytes' keys <c>Q.weight</c>,
/// <c>Q.weight.absmax</c>, <c>Q.weight.nested_absmax</c> (sharded) and <c>Q.weight.quant_map</c>,
/// <c>Q.weight.nested_quant_map</c>, <c>Q.weight.quant_state.bitsandbytes__nf4|fp4</c> (replicated) under both schemes.
/// </summary>
internal static class HfNames
{
    /// <summary>What precedes the quant type in the packed quant-state key of a 4-bit layer's weight.</summary>
    public const string PackedMarker = ".weight.quant_state.bitsandbytes__";

    /// <summary>The sharded components of a 4-bit layer's weight (after <c>Q.</c>).</summary>
    public static readonly string[] ShardedComponents = ["weight", "weight.absmax", "weight.nested_absmax"];

    /// <summary>The replicated double-quant offset (inside the packed JSON on the Hugging Face side).</summary>
    public const string NestedOffset = "weight.nested_offset";

    /// <summary>The 4-bit layer prefix (<c>Q.</c>) of a packed quant-state key, or null.</summary>
    public static string? QuantizedPrefix(string key)
    {
        var i = key.LastIndexOf(PackedMarker, StringComparison.Ordinal);
        return i < 0 || key.IndexOf('.', i + PackedMarker.Length) >= 0 ? null : key[..(i + 1)];
    }

    /// <summary>The Hugging Face key of a sharded name, and whether it belongs in the adapter file.</summary>
    public static (string Key, bool Adapter) ToHf(string name, IEnumerable<string> loraLayers)
    {
        foreach (var l in loraLayers)
        {
            if (name == l + ".lora_A.weight" || name == l + ".lora_B.weight")
            {
                return (ModelSurgery.AdapterKeyPrefix + name, true);
            }

            var basePrefix = l + ".base_layer.";
            if (name.StartsWith(basePrefix, StringComparison.Ordinal))
            {
                return (l + "." + name[basePrefix.Length..], false);
            }
        }

        return (name, false);
    }

    /// <summary>The sharded name of a Hugging Face base-model key, given the layers an adapter wraps.</summary>
    public static string FromHf(string key, IEnumerable<string> loraLayers)
    {
        foreach (var l in loraLayers)
        {
            if (key.StartsWith(l + ".", StringComparison.Ordinal))
            {
                return l + ".base_layer." + key[(l.Length + 1)..];
            }
        }

        return key;
    }
}
