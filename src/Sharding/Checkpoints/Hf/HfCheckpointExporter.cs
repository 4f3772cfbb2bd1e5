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
/// per-rank extras are left out. Byte-level: no libtorch is loaded (bnbrun uses it).
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
        var replicated = folder.Index.Replicated.ToDictionary(r => r.Name, r => (Record: r, Bytes: ReadBytes(folder, r, verify)), StringComparer.Ordinal);
        if (!replicated.TryGetValue(ModelMetadata.TensorName, out var metaBytes))
        {
            throw new CheckpointException(CheckpointError.Mismatch, replicatedFile, ModelMetadata.TensorName,
                "missing: the checkpoint was not saved from a FullyShard model's ReplicatedState (or by an older version), so its module layout is unknown.");
        }

        var meta = ModelMetadata.Parse(metaBytes.Bytes, replicatedFile);
        var model = new List<FileEntry>();
        var adapter = new List<FileEntry>();
        foreach (var prefix in replicated.Keys.Select(HfNames.QuantizedPrefix).OfType<string>().Order(StringComparer.Ordinal))
        {
            model.AddRange(Quantized(folder, prefix, replicated, meta, verify));
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

    private static readonly Dictionary<string, string> PtFormat = new() { ["format"] = "pt" };

    private static byte[] ReadBytes(CheckpointFolder folder, StoredTensorRecord r, bool verify)
    {
        using var ms = new MemoryStream();
        folder.ReadStored(r, chunk => ms.Write(chunk), verify);
        return ms.ToArray();
    }

    /// <summary>A 4-bit layer's bitsandbytes entries, checked as bitsandbytes would load them, every byte as saved.</summary>
    private static IEnumerable<FileEntry> Quantized(CheckpointFolder folder, string prefix, Dictionary<string, (StoredTensorRecord Record, byte[] Bytes)> replicated,
        ModelMetadata meta, bool verify)
    {
        var blobKey = replicated.Keys.Single(k => HfNames.QuantizedPrefix(k) == prefix);
        var sharded = HfNames.ShardedComponents.Select(c => folder.Index.TensorRecord(prefix + c)).OfType<ShardedTensorRecord>().ToList();
        var stored = replicated.Values.Where(r => r.Record.Name.StartsWith(prefix + "weight.", StringComparison.Ordinal) && r.Record.Name != prefix + HfNames.NestedOffset).ToList();
        (string, long)? Info(string key) =>
            sharded.FirstOrDefault(t => t.Name == key) is { } t ? (t.DType, t.Length)
            : replicated.TryGetValue(key, out var r) ? (r.Record.DType, r.Record.Shape.Aggregate(1L, (a, b) => a * b)) : null;
        QuantizedLayerCheck.Check(prefix, blobKey, replicated[blobKey].Bytes, Info,
            [.. folder.Index.Tensors.Select(t => t.Name).Concat(replicated.Keys).Where(k => k.StartsWith(prefix + "weight.", StringComparison.Ordinal))],
            key => sharded.Any(t => t.Name == key) ? folder.IndexPath : folder.FilePath(CheckpointPaths.ReplicatedFile), prefix + HfNames.NestedOffset);
        return sharded.Select(t => new FileEntry(HfNames.ToHf(t.Name, meta.Lora.Keys).Key, Parse(t.DType), t.GlobalShape, sink => folder.ReadSlice(t, new ShardRange(0, t.Length), sink, verify)))
            .Concat(stored.Select(r => new FileEntry(HfNames.ToHf(r.Record.Name, meta.Lora.Keys).Key, Parse(r.Record.DType), r.Record.Shape, sink => sink(r.Bytes))));
    }

    private static FileEntry Float(CheckpointFolder folder, string name, string key, string dtypeName, bool verify)
    {
        var t = folder.Index.TensorRecord(name)
            ?? throw new CheckpointException(CheckpointError.Incomplete, folder.IndexPath, name, "missing: the model metadata lists this parameter but the checkpoint has no such sharded tensor.");
        if (!SafeTensorsFile.TryParseDType(dtypeName, out var dtype) || !FloatConverter.Supports(dtype) || t.DType != "F32")
        {
            throw new CheckpointException(CheckpointError.BadIndex, folder.IndexPath, name, $"a float parameter must be stored as F32 for module dtype {dtypeName}; it is {t.DType}.");
        }

        return new FileEntry(key, dtype, t.GlobalShape, sink =>
        {
            var converter = new FloatConverter(ScalarType.Float32, dtype, sink);
            folder.ReadSlice(t, new ShardRange(0, t.Length), converter.Write, verify);
            converter.Finish();
        });
    }

    private static ScalarType Parse(string dtype) => SafeTensorsFile.TryParseDType(dtype, out var d) ? d : throw new ArgumentException($"unknown dtype {dtype}", nameof(dtype));

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
