using System.Text;
using System.Text.Json;
using BnbDist.Nn.Checkpoints;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using BnbDist.Sharding.Checkpoints;
using BnbDist.Tests;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>
/// Hugging Face export and import of sharded checkpoints, on real files: the golden bitsandbytes NF4/FP4 layers with
/// LoRA and a bf16 head, sharded on 2 ranks (threads with real TCP communicators).
/// </summary>
public class HfExportImportTests
{
    /// <summary>
    /// Export of a 2-rank checkpoint gives exactly what the unsharded writers give for the same model (HfCheckpoint.Save
    /// of the base, ModelSurgery.SaveAdapter of the adapter), the 4-bit tensors are bitsandbytes' own golden bytes under
    /// its keys, the adapter loads into LoraLinear layers, and a split export (index + shards) holds the same tensors.
    /// </summary>
    [Fact]
    public void ExportOfATwoRankCheckpointEqualsTheUnshardedWritersAndGoldenBytes()
    {
        using var tmp = new TempFolder();
        var ckpt = HfModels.SaveSharded(tmp.Sub("root"), 2, seed: 7);
        var (model, adapter) = HfModels.Unsharded(tmp.Sub("unsharded"), seed: 7);

        var result = HfCheckpointExporter.Export(ckpt, tmp.Sub("hf"));
        Assert.Equal(new HfExportResult(16, 1, 4), result); // 7 bitsandbytes keys for each 4-bit layer (bias included), head weight and bias
        var exported = HfCheckpoint.Read(tmp.Sub("hf"));
        Assert.Null(HfModels.Difference(HfCheckpoint.Read(model), exported));
        Assert.Null(HfModels.Difference(HfModels.Adapter(adapter), HfModels.Adapter(Path.Combine(tmp.Sub("hf"), "adapter"))));
        foreach (var type in new[] { "nf4", "fp4" })
        {
            var golden = Golden.Data.Names.Where(n => n.StartsWith($"lin4.{type}.weight", StringComparison.Ordinal)).ToDictionary(n => "block." + type + n[$"lin4.{type}".Length..], Golden.Get);
            Assert.Null(HfModels.Difference(golden, exported.Where(kv => kv.Key.StartsWith($"block.{type}.weight", StringComparison.Ordinal)).ToDictionary()));
        }

        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(tmp.Sub("hf"), "adapter", ModelSurgery.AdapterConfigFile))))
        {
            Assert.Equal(HfModels.R, config.RootElement.GetProperty("r").GetInt32());
            Assert.Equal(8.0, config.RootElement.GetProperty("lora_alpha").GetDouble());
            Assert.Equal(["fp4", "nf4"], config.RootElement.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));
        }

        var reloaded = new GoldenModel(lora: true, seed: 99);
        ModelSurgery.LoadAdapter(reloaded, Path.Combine(tmp.Sub("hf"), "adapter"));
        var expectedAdapter = new GoldenModel(lora: true, seed: 7);
        foreach (var ((name, got), (_, want)) in ModelSurgery.Adapters(reloaded).Zip(ModelSurgery.Adapters(expectedAdapter)))
        {
            Assert.True(got.LoraA.equal(want.LoraA).all().item<bool>() && got.LoraB.equal(want.LoraB).all().item<bool>(), name);
        }

        var split = HfCheckpointExporter.Export(ckpt, tmp.Sub("hf-split"), maxShardBytes: 20_000);
        Assert.True(split.ModelFiles > 2, $"{split.ModelFiles} files");
        Assert.True(File.Exists(Path.Combine(tmp.Sub("hf-split"), HfCheckpoint.IndexFile)));
        Assert.Null(HfModels.Difference(exported, HfCheckpoint.Read(tmp.Sub("hf-split"))));
    }

    /// <summary>
    /// Import for world sizes 1, 2 and 3 stores the same full tensors, and each exports back to the original bytes;
    /// import → load into a FullyShard model built with other values → save → export is byte-identical too.
    /// </summary>
    [Fact]
    public void ImportForAnyWorldSizeAndRoundTripsAreByteIdentical()
    {
        using var tmp = new TempFolder();
        var hf = tmp.Sub("hf");
        HfCheckpointExporter.Export(HfModels.SaveSharded(tmp.Sub("root"), 2, seed: 7), hf);
        var original = HfCheckpoint.Read(hf);
        var originalAdapter = HfModels.Adapter(Path.Combine(hf, "adapter"));

        Dictionary<string, byte[]>? first = null;
        foreach (var world in new[] { 1, 2, 3 })
        {
            var folder = CheckpointPaths.StepFolder(tmp.Sub($"imported-{world}"), 0);
            var index = HfCheckpointImporter.Import(hf, Path.Combine(hf, "adapter"), folder, world);
            Assert.Equal(world, index.WorldSize);
            using (var opened = CheckpointFolder.Open(folder))
            {
                var full = index.Tensors.ToDictionary(t => t.Name, t => CheckpointTestData.Bytes(opened.ReadFull(t.Name)));
                foreach (var (name, t) in opened.ReadReplicated())
                {
                    full["replicated:" + name] = CheckpointTestData.Bytes(t);
                }

                first ??= full;
                Assert.Equal(first.Keys.Order(), full.Keys.Order());
                Assert.All(first, kv => Assert.True(kv.Value.AsSpan().SequenceEqual(full[kv.Key]), $"{kv.Key} differs for world size {world}"));
            }

            var back = tmp.Sub($"back-{world}");
            HfCheckpointExporter.Export(folder, back);
            Assert.Null(HfModels.Difference(original, HfCheckpoint.Read(back)));
            Assert.Null(HfModels.Difference(originalAdapter, HfModels.Adapter(Path.Combine(back, "adapter"))));
        }

        // Load the 3-rank import on 2 ranks into a model whose LoRA and head hold other values, save, export.
        var resaved = RankThreads.RunAll(2, comm =>
        {
            var model = new GoldenModel(lora: true, seed: 99);
            var fsdp = HfModels.Wrap(model, comm!);
            using var loaded = new ShardedCheckpointer(tmp.Sub("imported-3"), comm).Load(new CheckpointLoadOptions { Step = 0 });
            fsdp.LoadShardedState(loaded.Sharded.ToDictionary(kv => kv.Key, kv => kv.Value.Local), loaded.Replicated);
            using var ckpt = new ShardedCheckpointer(tmp.Sub("resaved"), comm);
            return ckpt.Save(5, new CheckpointState(fsdp.ShardedState(), fsdp.ReplicatedState()));
        })[0];
        HfCheckpointExporter.Export(resaved, tmp.Sub("hf-again"));
        Assert.Null(HfModels.Difference(original, HfCheckpoint.Read(tmp.Sub("hf-again"))));
        Assert.Null(HfModels.Difference(originalAdapter, HfModels.Adapter(Path.Combine(tmp.Sub("hf-again"), "adapter"))));
    }

    /// <summary>Bad Hugging Face input fails the import with a typed error naming the key and the file.</summary>
    [Theory]
    [InlineData("missing-key")]
    [InlineData("corrupt-json")]
    [InlineData("short-weight")]
    [InlineData("lora-shape")]
    [InlineData("no-adapter-config")]
    public void BadInputIsATypedErrorNamingKeyAndFile(string damage)
    {
        using var tmp = new TempFolder();
        var hf = tmp.Sub("hf");
        HfCheckpointExporter.Export(HfModels.SaveSharded(tmp.Sub("root"), 2, seed: 7), hf);
        var modelFile = Path.Combine(hf, HfCheckpoint.SingleFile);
        var adapterDir = Path.Combine(hf, "adapter");
        var adapterFile = Path.Combine(adapterDir, ModelSurgery.AdapterFile);
        var (file, key, kind) = damage switch
        {
            "missing-key" => Rewrite(modelFile, "block.nf4.weight.absmax", null, CheckpointError.Incomplete),
            "corrupt-json" => Rewrite(modelFile, "block.fp4.weight.quant_state.bitsandbytes__fp4", tensor(Encoding.UTF8.GetBytes("{\"quant_type\": \"fp4\", \"blocksize\":")), CheckpointError.Corrupt),
            "short-weight" => Rewrite(modelFile, "block.nf4.weight", zeros([100, 1], ScalarType.Byte), CheckpointError.BadIndex),
            "lora-shape" => Rewrite(adapterFile, "base_model.model.block.fp4.lora_A.weight", zeros([HfModels.R, 321]), CheckpointError.Mismatch),
            _ => Delete(Path.Combine(adapterDir, ModelSurgery.AdapterConfigFile)),
        };

        var ex = Assert.Throws<CheckpointException>(() => HfCheckpointImporter.Import(hf, adapterDir, tmp.Sub("out"), 2));
        Assert.Equal(kind, ex.Error);
        Assert.Contains(file, ex.Message, StringComparison.Ordinal);
        Assert.Equal(key, ex.TensorName);
        Assert.False(File.Exists(Path.Combine(tmp.Sub("out"), CheckpointPaths.IndexFile)));
    }

    /// <summary>A checkpoint saved without the model metadata (not from ReplicatedState) cannot be exported, and says why.</summary>
    [Fact]
    public void ExportWithoutModelMetadataIsATypedError()
    {
        using var tmp = new TempFolder();
        var folder = RankThreads.RunAll(2, comm =>
        {
            var fsdp = HfModels.Wrap(new GoldenModel(lora: true, 7), comm!);
            var offsetsOnly = fsdp.ReplicatedState().Where(kv => kv.Key.EndsWith("nested_offset", StringComparison.Ordinal)).ToDictionary();
            using var ckpt = new ShardedCheckpointer(tmp.Sub("root"), comm);
            return ckpt.Save(1, new CheckpointState(fsdp.ShardedState(), offsetsOnly));
        })[0];
        var ex = Assert.Throws<CheckpointException>(() => HfCheckpointExporter.Export(folder, tmp.Sub("hf")));
        Assert.Equal(CheckpointError.Mismatch, ex.Error);
        Assert.Equal(ModelMetadata.TensorName, ex.TensorName);
    }

    private static (string File, string Key, CheckpointError Kind) Rewrite(string path, string key, Tensor? value, CheckpointError kind)
    {
        var tensors = SafeTensorsFile.Load(path);
        if (value is null)
        {
            tensors.Remove(key);
        }
        else
        {
            tensors[key] = value;
        }

        SafeTensorsFile.Save(path, tensors);
        // A missing key is reported against the model folder, anything else against its file.
        return (value is null ? Path.GetDirectoryName(path)! : path, key, kind);
    }

    private static (string File, string? Key, CheckpointError Kind) Delete(string path)
    {
        File.Delete(path);
        return (path, null, CheckpointError.Incomplete);
    }
}
