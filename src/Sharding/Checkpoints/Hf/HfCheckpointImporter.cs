using System.Text.Json;
using BnbDist.Backends.Interop;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Reads a Hugging Face bnb-4bit model folder (and optionally a peft LoRA adapter) into a sharded checkpoint for any
/// world size, as a FullyShard model of that structure would save it: packed weights and statistics byte for byte
/// (never re-quantized), float parameters as f32 shards, the metadata <see cref="HfCheckpointExporter"/> needs, no
/// optimizer state. Byte-level: no libtorch is loaded (bnbrun uses it). Load it with <see cref="ShardedCheckpointer"/> and <see cref="FsdpModule.LoadShardedState"/>.
/// </summary>
public static class HfCheckpointImporter
{
    /// <summary>
    /// Writes the checkpoint folder <paramref name="destination"/> (must not exist or be empty; index last) for
    /// <paramref name="worldSize"/> ranks at step <paramref name="step"/> and returns its index.
    /// </summary>
    /// <param name="modelDirectory">The Hugging Face model folder (<c>model.safetensors</c> or a sharded index).</param>
    /// <param name="adapterDirectory">A peft adapter folder (<c>adapter_model.safetensors</c>, <c>adapter_config.json</c>), or null.</param>
    /// <param name="destination">The checkpoint folder to write (e.g. <c>ROOT/step-0</c>).</param>
    /// <param name="worldSize">Ranks the checkpoint is laid out for (any other loads it too, by resharding).</param>
    /// <param name="step">The step recorded in the index.</param>
    /// <param name="configFingerprint">The config fingerprint recorded in the index.</param>
    /// <exception cref="CheckpointException">A missing file or key, a corrupt file or packed quant-state JSON, shapes that
    /// do not fit together, or a tensor that cannot be sharded; the message names the file and key.</exception>
    public static CheckpointIndex Import(string modelDirectory, string? adapterDirectory, string destination, int worldSize, long step = 0, string configFingerprint = "")
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDirectory);
        ArgumentException.ThrowIfNullOrEmpty(destination);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(worldSize);
        if (Directory.Exists(destination) && Directory.EnumerateFileSystemEntries(destination).Any())
        {
            throw new CheckpointException(CheckpointError.SaveFailed, destination, null, "the destination exists and is not empty.");
        }

        var model = HfModelFiles.OpenModel(modelDirectory);
        var lora = adapterDirectory is null ? new Dictionary<string, LoraMetadata>() : ReadAdapterConfig(adapterDirectory, model);
        var adapter = adapterDirectory is null ? null : HfModelFiles.OpenFile(Path.Combine(adapterDirectory, ModelSurgery.AdapterFile));
        var plan = new ImportPlan();
        var quantizedPrefixes = model.Keys.Select(HfNames.QuantizedPrefix).OfType<string>().ToList();
        foreach (var prefix in quantizedPrefixes)
        {
            AddQuantized(plan, model, prefix, lora.Keys);
        }

        foreach (var key in model.Keys.Where(k => !quantizedPrefixes.Any(p => k.StartsWith(p + "weight", StringComparison.Ordinal))))
        {
            plan.AddFloat(model, key, HfNames.FromHf(key, lora.Keys));
        }

        if (adapter is not null)
        {
            foreach (var (layer, _) in lora)
            {
                foreach (var part in new[] { ".lora_A.weight", ".lora_B.weight" })
                {
                    plan.AddFloat(adapter, ModelSurgery.AdapterKeyPrefix + layer + part, layer + part);
                }
            }
        }

        var metadata = new ModelMetadata
        {
            Format = ModelMetadata.FormatName,
            Params = new(plan.FloatDTypes, StringComparer.Ordinal),
            Lora = new(lora, StringComparer.Ordinal),
        };
        plan.Replicated.Add(Stored(ModelMetadata.TensorName, ScalarType.Byte, metadata.ToBytes()));

        Directory.CreateDirectory(destination);
        var manifests = Enumerable.Range(0, worldSize).Select(rank => RankFileWriter.Write(destination, rank, worldSize,
            [.. plan.Shards.Select(s => s.For(rank, worldSize))], plan.Replicated, [])).ToList();
        var index = IndexBuilder.Build(manifests, step, worldSize, configFingerprint, destination);
        DurableFiles.WriteAllText(Path.Combine(destination, CheckpointPaths.IndexFile), index.ToJson(), CheckpointPaths.IndexFile);
        return index;
    }

    /// <summary>A 4-bit layer: checked as bitsandbytes loads it, then its packed weight and statistics as shards, the rest replicated.</summary>
    private static void AddQuantized(ImportPlan plan, HfModelFiles model, string prefix, IEnumerable<string> lora)
    {
        var statKeys = model.Keys.Where(k => k.StartsWith(prefix + "weight.", StringComparison.Ordinal)).ToList();
        var blobKey = statKeys.Single(k => HfNames.QuantizedPrefix(k) == prefix);
        var fields = QuantizedLayerCheck.Check(prefix, blobKey, model.ReadBytes(blobKey),
            key => model.Contains(key) ? (SafeTensorsFile.DTypeString(model.Info(key).DType), model.Info(key).NumElements) : null, statKeys, model.FileOf);

        // The atoms FullyShard cuts a 4-bit weight into (SlotDiscovery): one nested-statistics block of absmax.
        long blocksPerAtom = fields.NestedBlockSize ?? 256;
        var shardedPrefix = HfNames.FromHf(prefix, lora);
        plan.Shards.Add(ImportShard.FromFile(model, prefix + "weight", shardedPrefix + "weight", fields.BlockSize * blocksPerAtom / 2));
        plan.Shards.Add(ImportShard.FromFile(model, prefix + "weight.absmax", shardedPrefix + "weight.absmax", blocksPerAtom));
        if (fields.NestedOffset is double offset)
        {
            plan.Shards.Add(ImportShard.FromFile(model, prefix + "weight.nested_absmax", shardedPrefix + "weight.nested_absmax", 1));
            plan.Replicated.Add(Stored(shardedPrefix + HfNames.NestedOffset, ScalarType.Float32, BitConverter.GetBytes((float)offset)));
        }

        foreach (var key in statKeys.Where(k => !HfNames.ShardedComponents.Any(c => k == prefix + c)))
        {
            var info = model.Info(key);
            plan.Replicated.Add(new StoredSource(HfNames.FromHf(key, lora), info.DType, info.Shape, sink => model.Stream(key, 0, info.End - info.Begin, sink)));
        }
    }

    private static Dictionary<string, LoraMetadata> ReadAdapterConfig(string adapterDirectory, HfModelFiles model)
    {
        var configPath = Path.Combine(adapterDirectory, ModelSurgery.AdapterConfigFile);
        if (!File.Exists(configPath))
        {
            throw new CheckpointException(CheckpointError.Incomplete, configPath, null, "missing: an adapter needs its config (lora_alpha).");
        }

        double alpha, dropout;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(configPath));
            alpha = doc.RootElement.GetProperty("lora_alpha").GetDouble();
            dropout = doc.RootElement.TryGetProperty("lora_dropout", out var d) ? d.GetDouble() : 0;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new CheckpointException(CheckpointError.Corrupt, configPath, null, $"not a peft LoRA config with a numeric lora_alpha: {ex.Message}", ex);
        }

        var weights = HfModelFiles.OpenFile(Path.Combine(adapterDirectory, ModelSurgery.AdapterFile));
        var result = new Dictionary<string, LoraMetadata>(StringComparer.Ordinal);
        foreach (var key in weights.Keys)
        {
            const string A = ".lora_A.weight";
            if (key.EndsWith(".lora_B.weight", StringComparison.Ordinal) && weights.Contains(key[..^A.Length] + A))
            {
                continue;
            }

            if (!key.StartsWith(ModelSurgery.AdapterKeyPrefix, StringComparison.Ordinal) || !key.EndsWith(A, StringComparison.Ordinal))
            {
                throw new CheckpointException(CheckpointError.BadIndex, weights.FileOf(key), key, $"not a peft LoRA key ({ModelSurgery.AdapterKeyPrefix}NAME.lora_A.weight / .lora_B.weight, each with its pair).");
            }

            var layer = key[ModelSurgery.AdapterKeyPrefix.Length..^A.Length];
            result[layer] = new LoraMetadata(CheckLayer(layer, weights, model), alpha, dropout);
        }

        return result;
    }

    /// <summary>Checks an adapter layer against its base (A is [r, in], B is [out, r]) and returns r.</summary>
    private static int CheckLayer(string layer, HfModelFiles weights, HfModelFiles model)
    {
        var aKey = ModelSurgery.AdapterKeyPrefix + layer + ".lora_A.weight";
        var bKey = ModelSurgery.AdapterKeyPrefix + layer + ".lora_B.weight";
        var a = weights.Info(aKey);
        var b = weights.Contains(bKey) ? weights.Info(bKey) : throw new CheckpointException(CheckpointError.Incomplete, weights.FileOf(aKey), bKey, "missing.");
        var baseKey = layer + ".weight";
        if (!model.Contains(baseKey))
        {
            throw new CheckpointException(CheckpointError.Mismatch, weights.FileOf(aKey), aKey, $"adapts {layer}, but the model has no {baseKey}.");
        }

        var packedKey = model.Keys.FirstOrDefault(k => HfNames.QuantizedPrefix(k) == layer + ".");
        var baseShape = packedKey is null ? model.Info(baseKey).Shape : PackedShape(model, packedKey);
        if (a.Shape.Length != 2 || b.Shape.Length != 2 || baseShape.Length != 2 || a.Shape[0] != b.Shape[1] || a.Shape[1] != baseShape[1] || b.Shape[0] != baseShape[0])
        {
            throw new CheckpointException(CheckpointError.Mismatch, weights.FileOf(aKey), aKey,
                $"lora_A [{string.Join(", ", a.Shape)}] and lora_B [{string.Join(", ", b.Shape)}] do not fit the base weight [{string.Join(", ", baseShape)}] (A is [r, in], B is [out, r]).");
        }

        return (int)a.Shape[0];
    }

    private static long[] PackedShape(HfModelFiles model, string key)
    {
        try
        {
            return QuantState.ParsePackedJson(key, model.ReadBytes(key)).Shape;
        }
        catch (QuantStateFormatException ex)
        {
            throw new CheckpointException(CheckpointError.Corrupt, model.FileOf(key), key, ex.Message, ex);
        }
    }

    private static StoredSource Stored(string name, ScalarType dtype, byte[] bytes) =>
        new(name, dtype, [bytes.Length / TensorMemory.ElementSize(dtype)], sink => sink(bytes));

    /// <summary>What the import writes: sharded tensors (one source each, sliced per rank) and replicated ones.</summary>
    private sealed class ImportPlan
    {
        public List<ImportShard> Shards { get; } = [];

        public List<StoredSource> Replicated { get; } = [];

        public Dictionary<string, string> FloatDTypes { get; } = new(StringComparer.Ordinal);

        /// <summary>A float parameter: an f32 shard (FullyShard's master) with 256-element atoms; its dtype goes to the metadata.</summary>
        public void AddFloat(HfModelFiles files, string key, string name)
        {
            var info = files.Info(key);
            if (!FloatConverter.Supports(info.DType))
            {
                throw new CheckpointException(CheckpointError.Mismatch, files.FileOf(key), key,
                    $"is {info.DType}: only bitsandbytes 4-bit layers and float parameters can be sharded (8-bit layers are not).");
            }

            FloatDTypes[name] = SafeTensorsFile.DTypeString(info.DType);
            var size = TensorMemory.ElementSize(info.DType);
            Shards.Add(new ImportShard(name, ScalarType.Float32, info.Shape, SlotDiscovery.FloatAtom, (range, sink) =>
            {
                var converter = new FloatConverter(info.DType, ScalarType.Float32, sink);
                files.Stream(key, range.Start * size, range.End * size, converter.Write);
                converter.Finish();
            }));
        }
    }

    /// <summary>One sharded tensor to write: its name, stored dtype and shape, atom size, and what produces any element range.</summary>
    private sealed record ImportShard(string Name, ScalarType DType, long[] Shape, long UnitsPerAtom, Action<ShardRange, ByteSink> Produce)
    {
        /// <summary>A tensor stored as in the file: each rank's slice is a byte range of it.</summary>
        public static ImportShard FromFile(HfModelFiles files, string key, string name, long unitsPerAtom)
        {
            var info = files.Info(key);
            var size = TensorMemory.ElementSize(info.DType);
            return new ImportShard(name, info.DType, info.Shape, unitsPerAtom, (range, sink) => files.Stream(key, range.Start * size, range.End * size, sink));
        }

        public ShardSource For(int rank, int worldSize)
        {
            var length = Shape.Aggregate(1L, (a, b) => a * b);
            var layout = ShardLayout.ForLength(length, UnitsPerAtom, worldSize);
            var range = layout.Slice(rank, length, UnitsPerAtom);
            return new ShardSource(Name, DType, Shape, layout.Atoms, UnitsPerAtom, range, sink => Produce(range, sink));
        }
    }
}
