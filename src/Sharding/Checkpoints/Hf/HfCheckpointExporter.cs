using System.Text.Json;
using System.Text.Json.Nodes;
using BnbDist.Nn.Checkpoints;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>What <see cref="HfCheckpointExporter.Export"/> wrote.</summary>
/// <param name="ModelTensors">Tensors of the base model (bitsandbytes' 4-bit keys and float parameters).</param>
/// <param name="ModelFiles">Model files (1, or the shards listed by <c>model.safetensors.index.json</c>).</param>
/// <param name="AdapterTensors">Tensors of the peft adapter (0: the model has no LoRA layers, no adapter written).</param>
public sealed record HfExportResult(int ModelTensors, int ModelFiles, int AdapterTensors);

/// <summary>
/// Consolidates a sharded checkpoint (saved from a FullyShard model, whose replicated metadata describes it) into a
/// Hugging Face bnb-4bit model folder — <c>model.safetensors</c>, or shards with <c>model.safetensors.index.json</c>,
/// under bitsandbytes' keys exactly as <see cref="HfCheckpoint.Save"/> writes an unsharded model — and, when the model
/// has LoRA layers, a peft adapter (<c>adapter_model.safetensors</c>, <c>adapter_config.json</c>). Bytes are moved,
/// never re-quantized; float parameters are cast from their f32 shards back to the model's dtype. Optimizer state and
/// per-rank extras are left out.
/// </summary>
public static class HfCheckpointExporter
{
    /// <summary>
    /// Exports checkpoint <paramref name="source"/> into <paramref name="directory"/> (created; must be empty) and the
    /// adapter into <paramref name="adapterDirectory"/> (default: <c>{directory}/adapter</c>). Model files hold at most
    /// <paramref name="maxShardBytes"/> bytes each (one tensor may exceed it alone), as <see cref="HfCheckpoint.Save"/>.
    /// </summary>
    /// <exception cref="CheckpointException">The checkpoint is damaged, lacks the metadata (saved before it was recorded),
    /// or its tensors contradict their quantization metadata; the message names the file and tensor.</exception>
    public static HfExportResult Export(string source, string directory, string? adapterDirectory = null, long maxShardBytes = 5L << 30, bool verify = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxShardBytes, 1L);
        using var folder = CheckpointFolder.Open(source);
        var replicatedFile = folder.FilePath(CheckpointPaths.ReplicatedFile);
        var replicated = folder.ReadReplicated(verify);
        var hold = new List<Tensor>(); // statistics read for checking, written later
        try
        {
            if (!replicated.TryGetValue(ModelMetadata.TensorName, out var metaTensor))
            {
                throw new CheckpointException(CheckpointError.Mismatch, replicatedFile, ModelMetadata.TensorName,
                    "missing: the checkpoint was not saved from a FullyShard model's ReplicatedState (or by an older version), so its module layout is unknown.");
            }

            var meta = ModelMetadata.Parse(metaTensor, replicatedFile);
            var model = new List<FileEntry>();
            var adapter = new List<FileEntry>();
            foreach (var prefix in replicated.Keys.Select(HfNames.QuantizedPrefix).OfType<string>().Order(StringComparer.Ordinal))
            {
                model.AddRange(Quantized(folder, prefix, replicated, meta, hold, verify));
            }

            foreach (var (name, dtypeName) in meta.Params)
            {
                var (key, isAdapter) = HfNames.ToHf(name, meta.Lora.Keys);
                (isAdapter ? adapter : model).Add(Float(folder, name, key, dtypeName, verify));
            }

            var duplicate = model.Concat(adapter).GroupBy(e => e.Key).FirstOrDefault(g => g.Count() > 1);
            if (duplicate is not null)
            {
                throw new CheckpointException(CheckpointError.BadIndex, replicatedFile, duplicate.Key, "two checkpoint tensors map to this Hugging Face key.");
            }

            PrepareEmpty(directory);
            var files = WriteModel(directory, model, maxShardBytes);
            if (meta.Lora.Count > 0)
            {
                var adapterDir = adapterDirectory ?? Path.Combine(directory, "adapter");
                PrepareEmpty(adapterDir);
                CheckpointFileWriter.Write(Path.Combine(adapterDir, ModelSurgery.AdapterFile), adapter, PtFormat);
                DurableFiles.WriteAllText(Path.Combine(adapterDir, ModelSurgery.AdapterConfigFile), ModelSurgery.AdapterConfigJson(LoraConfigOf(meta, replicatedFile)), ModelSurgery.AdapterConfigFile);
            }

            return new HfExportResult(model.Count, files, meta.Lora.Count > 0 ? adapter.Count : 0);
        }
        finally
        {
            foreach (var t in replicated.Values.Concat(hold))
            {
                t.Dispose();
            }
        }
    }

    private static readonly Dictionary<string, string> PtFormat = new() { ["format"] = "pt" };

    /// <summary>
    /// A 4-bit layer's six bitsandbytes entries, after checking them as bitsandbytes would load them (the packed JSON,
    /// the statistics' sizes, the packed weight's length).
    /// </summary>
    private static IEnumerable<FileEntry> Quantized(CheckpointFolder folder, string prefix, Dictionary<string, Tensor> replicated, ModelMetadata meta,
        List<Tensor> hold, bool verify)
    {
        var stats = replicated.Where(kv => kv.Key.StartsWith(prefix + "weight.", StringComparison.Ordinal) && kv.Key != prefix + HfNames.NestedOffset)
            .ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        foreach (var component in HfNames.ShardedComponents.Skip(1))
        {
            if (folder.Index.TensorRecord(prefix + component) is not null)
            {
                var t = folder.ReadFull(prefix + component, verify);
                hold.Add(t);
                stats[prefix + component] = t;
            }
        }

        QuantState state;
        try
        {
            state = QuantState.FromDictionary(stats);
        }
        catch (QuantStateFormatException ex)
        {
            var key = ex.Key.StartsWith(prefix, StringComparison.Ordinal) ? ex.Key : prefix + "weight." + ex.Key;
            throw new CheckpointException(CheckpointError.Corrupt, folder.FilePath(CheckpointPaths.ReplicatedFile), key, ex.Message, ex);
        }

        var weight = folder.Index.TensorRecord(prefix + "weight")
            ?? throw new CheckpointException(CheckpointError.Incomplete, folder.IndexPath, prefix + "weight", "missing: the checkpoint has its quant state but not the packed weight.");
        if (weight.DType != "U8" || weight.Length != (state.NumElements + 1) / 2)
        {
            throw new CheckpointException(CheckpointError.BadIndex, folder.IndexPath, weight.Name,
                $"must be U8 with {(state.NumElements + 1) / 2} elements for a [{string.Join(", ", state.Shape)}] weight; it is {weight.DType} with {weight.Length}.");
        }

        var whole = new ShardRange(0, weight.Length);
        return stats.Select(kv => new FileEntry(HfNames.ToHf(kv.Key, meta.Lora.Keys).Key, kv.Value.dtype, kv.Value.shape, sink => TensorBytes.WriteTo(kv.Value, sink)))
            .Prepend(new FileEntry(HfNames.ToHf(weight.Name, meta.Lora.Keys).Key, ScalarType.Byte, weight.GlobalShape, sink => folder.ReadSlice(weight, whole, sink, verify)));
    }

    private static FileEntry Float(CheckpointFolder folder, string name, string key, string dtypeName, bool verify)
    {
        var t = folder.Index.TensorRecord(name)
            ?? throw new CheckpointException(CheckpointError.Incomplete, folder.IndexPath, name, "missing: the model metadata lists this parameter but the checkpoint has no such sharded tensor.");
        if (!SafeTensorsFile.TryParseDType(dtypeName, out var dtype) || t.DType != "F32")
        {
            throw new CheckpointException(CheckpointError.BadIndex, folder.IndexPath, name, $"a float parameter must be stored as F32 for module dtype {dtypeName}; it is {t.DType}.");
        }

        return new FileEntry(key, dtype, t.GlobalShape, sink =>
        {
            using var scope = NewDisposeScope();
            var full = folder.ReadFull(name, verify);
            TensorBytes.WriteTo(full.dtype == dtype ? full : full.to_type(dtype), sink);
        });
    }

    /// <summary>Writes the model files as <see cref="HfCheckpoint.Save"/> splits them (ordinal key order; index last); returns how many.</summary>
    private static int WriteModel(string directory, List<FileEntry> entries, long maxShardBytes)
    {
        var shards = new List<List<FileEntry>> { new() };
        long current = 0;
        foreach (var e in entries.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            if (current > 0 && current + e.Bytes > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }

            shards[^1].Add(e);
            current += e.Bytes;
        }

        if (shards.Count == 1)
        {
            CheckpointFileWriter.Write(Path.Combine(directory, HfCheckpoint.SingleFile), entries, PtFormat);
            return 1;
        }

        var weightMap = new JsonObject();
        for (var i = 0; i < shards.Count; i++)
        {
            var file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            CheckpointFileWriter.Write(Path.Combine(directory, file), shards[i], PtFormat);
            foreach (var e in shards[i])
            {
                weightMap[e.Key] = file;
            }
        }

        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = entries.Sum(e => e.Bytes) }, ["weight_map"] = weightMap };
        DurableFiles.WriteAllText(Path.Combine(directory, HfCheckpoint.IndexFile), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), HfCheckpoint.IndexFile);
        return shards.Count;
    }

    private static LoraConfig LoraConfigOf(ModelMetadata meta, string file)
    {
        var distinct = meta.Lora.Values.Distinct().ToList();
        if (distinct.Count != 1)
        {
            throw new CheckpointException(CheckpointError.Mismatch, file, ModelMetadata.TensorName,
                $"LoRA layers with different settings ({string.Join("; ", distinct)}): one adapter_config.json cannot describe them.");
        }

        return new LoraConfig
        {
            R = distinct[0].R,
            Alpha = distinct[0].Alpha,
            Dropout = distinct[0].Dropout,
            TargetModules = [.. meta.Lora.Keys.Select(k => k[(k.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal)],
        };
    }

    private static void PrepareEmpty(string directory)
    {
        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
        {
            throw new CheckpointException(CheckpointError.SaveFailed, directory, null, "the destination exists and is not empty.");
        }

        Directory.CreateDirectory(directory);
    }
}
