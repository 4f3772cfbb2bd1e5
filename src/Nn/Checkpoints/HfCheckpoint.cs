using System.Text.Json;
using System.Text.Json.Nodes;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using TorchSharp;
using static TorchSharp.torch;
using Module = TorchSharp.torch.nn.Module;

namespace BnbDist.Nn.Checkpoints;

/// <summary>
/// Hugging Face-style checkpoints of whole models, including bitsandbytes' "bnb-4bit"/8-bit ones: one
/// <c>model.safetensors</c>, or shards <c>model-0000i-of-0000n.safetensors</c> with <c>model.safetensors.index.json</c>
/// (<c>{"metadata": {"total_size": …}, "weight_map": {key: file}}</c>). Quantized layers use bitsandbytes' keys
/// (<c>weight</c>, <c>weight.absmax</c>, …, <c>weight.quant_state.bitsandbytes__nf4</c>; <c>SCB</c> for int8).
/// </summary>
public static class HfCheckpoint
{
    /// <summary>Index file name of a sharded checkpoint.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>Single-file checkpoint name.</summary>
    public const string SingleFile = "model.safetensors";

    /// <summary>
    /// Writes <paramref name="model"/>'s state dict (quantized layers in bitsandbytes' form) to <paramref name="directory"/>,
    /// split into shards of at most <paramref name="maxShardBytes"/> bytes (one file when it fits).
    /// </summary>
    public static void Save(Module model, string directory, long maxShardBytes = 5L << 30)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxShardBytes, 1L);
        Directory.CreateDirectory(directory);
        var sd = StateDict(model);
        var shards = new List<Dictionary<string, Tensor>> { new() };
        long current = 0;
        foreach (var (key, t) in sd.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var bytes = t.numel() * t.element_size();
            if (current > 0 && current + bytes > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }

            shards[^1][key] = t;
            current += bytes;
        }

        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        if (shards.Count == 1)
        {
            SafeTensorsFile.Save(Path.Combine(directory, SingleFile), shards[0], meta);
            File.Delete(Path.Combine(directory, IndexFile));
            return;
        }

        var weightMap = new JsonObject();
        long total = 0;
        for (var i = 0; i < shards.Count; i++)
        {
            var file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafeTensorsFile.Save(Path.Combine(directory, file), shards[i], meta);
            foreach (var (k, t) in shards[i])
            {
                weightMap[k] = file;
                total += t.numel() * t.element_size();
            }
        }

        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = weightMap };
        // The index is written last, so a reader never sees an index pointing at missing shards.
        var tmp = Path.Combine(directory, IndexFile + ".tmp");
        File.WriteAllText(tmp, index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.Move(tmp, Path.Combine(directory, IndexFile), overwrite: true);
    }

    /// <summary>Reads every tensor of a checkpoint directory (single file or sharded index), on CPU.</summary>
    /// <exception cref="FileNotFoundException">Neither file exists, or the index names a missing shard.</exception>
    /// <exception cref="StateDictException">The index maps a key to a shard that does not hold it.</exception>
    public static Dictionary<string, Tensor> Read(string directory)
    {
        var single = Path.Combine(directory, SingleFile);
        var indexPath = Path.Combine(directory, IndexFile);
        if (File.Exists(indexPath))
        {
            JsonNode? index;
            try
            {
                index = JsonNode.Parse(File.ReadAllText(indexPath));
            }
            catch (JsonException ex)
            {
                throw new FormatException($"{indexPath}: not valid JSON: {ex.Message}", ex);
            }

            var map = index?["weight_map"] as JsonObject ?? throw new FormatException($"{indexPath}: no \"weight_map\" object.");
            var result = new Dictionary<string, Tensor>();
            foreach (var group in map.GroupBy(kv => (string?)kv.Value ?? string.Empty))
            {
                var shardPath = Path.Combine(directory, Path.GetFileName(group.Key));
                if (!File.Exists(shardPath))
                {
                    throw new FileNotFoundException($"{indexPath} names shard {group.Key}, which does not exist.", shardPath);
                }

                var shard = SafeTensorsFile.Open(shardPath);
                foreach (var (key, _) in group)
                {
                    if (!shard.Contains(key))
                    {
                        throw new StateDictException(key, $"{indexPath} places it in {group.Key}, which does not hold it.");
                    }

                    result[key] = shard.Read(key);
                }
            }

            return result;
        }

        if (File.Exists(single))
        {
            return SafeTensorsFile.Load(single);
        }

        throw new FileNotFoundException($"No {SingleFile} or {IndexFile} in {directory}.", single);
    }

    /// <summary>
    /// Loads a checkpoint directory into <paramref name="model"/>: quantized layers take their bitsandbytes keys,
    /// everything else is copied by name. Missing or unexpected keys are a <see cref="StateDictException"/> naming the key.
    /// </summary>
    public static void Load(Module model, string directory, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var source = Read(directory);
        var used = new HashSet<string>();
        var quantized = ModuleSwap.Walk(model).Where(m => m.Module is IQuantizedModule).ToList();
        foreach (var (name, _, _, module) in quantized)
        {
            var q = (IQuantizedModule)module;
            var prefix = name + ".";
            q.LoadQuantizedStateDict(source, prefix);
            used.UnionWith(q.ExpectedKeys(prefix, source).Where(source.ContainsKey));
        }

        var quantizedPrefixes = quantized.Select(m => m.Name + ".").ToList();
        using (no_grad())
        {
            foreach (var (key, target) in model.state_dict())
            {
                if (quantizedPrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal)))
                {
                    continue;
                }

                if (!source.TryGetValue(key, out var value))
                {
                    throw new StateDictException(key, $"missing from the checkpoint in {directory}.");
                }

                if (!value.shape.SequenceEqual(target.shape))
                {
                    throw new StateDictException(key, $"checkpoint shape [{string.Join(", ", value.shape)}] does not match the model's [{string.Join(", ", target.shape)}].");
                }

                target.copy_(value);
                used.Add(key);
            }
        }

        var extra = source.Keys.Where(k => !used.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).FirstOrDefault();
        if (extra is not null)
        {
            throw new StateDictException(extra, $"in the checkpoint in {directory} but not in the model.");
        }

        if (device is not null)
        {
            model.to(device);
        }
    }

    /// <summary>The model's full state dict with quantized layers in bitsandbytes' form.</summary>
    public static Dictionary<string, Tensor> StateDict(Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var quantized = ModuleSwap.Walk(model).Where(m => m.Module is IQuantizedModule).ToList();
        var prefixes = quantized.Select(m => m.Name + ".").ToList();
        var result = model.state_dict().Where(kv => !prefixes.Any(p => kv.Key.StartsWith(p, StringComparison.Ordinal)))
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        foreach (var (name, _, _, module) in quantized)
        {
            foreach (var (k, v) in ((IQuantizedModule)module).QuantizedStateDict(name + "."))
            {
                result[k] = v;
            }
        }

        return result;
    }
}
