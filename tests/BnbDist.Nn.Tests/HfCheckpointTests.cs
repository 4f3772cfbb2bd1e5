using BnbDist.Nn.Checkpoints;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Nn.Tests;

/// <summary>Whole-model bnb-4bit checkpoints: sharded safetensors with an index, bitsandbytes keys, exact reload, typed errors.</summary>
public sealed class HfCheckpointTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("bnbdist-hf-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void ShardedBnb4bitCheckpointReloadsBitForBit()
    {
        manual_seed(6);
        var model = Quantized(new TinyModel(dim: 64, outDim: 16));
        HfCheckpoint.Save(model, dir, maxShardBytes: 8 << 10);
        var shards = Directory.GetFiles(dir, "model-*-of-*.safetensors");
        Assert.True(shards.Length > 1);
        Assert.True(File.Exists(Path.Combine(dir, HfCheckpoint.IndexFile)));
        var keys = HfCheckpoint.Read(dir).Keys.ToList();
        Assert.Contains("q_proj.weight.quant_state.bitsandbytes__nf4", keys);
        Assert.Contains("mlp.0.weight.nested_absmax", keys);
        Assert.Contains("lm_head.weight", keys);

        var fresh = Quantized(new TinyModel(dim: 64, outDim: 16));
        HfCheckpoint.Load(fresh, dir);
        using var x = randn(3, 64);
        Assert.True(model.forward(x).equal(fresh.forward(x)).all().item<bool>());
    }

    [Fact]
    public void MissingShardAndExtraKeysAreReported()
    {
        var model = Quantized(new TinyModel(dim: 64, outDim: 16));
        HfCheckpoint.Save(model, dir, maxShardBytes: 8 << 10);
        var shard = Directory.GetFiles(dir, "model-*-of-*.safetensors").Order().Last();
        var moved = shard + ".bak";
        File.Move(shard, moved);
        Assert.Contains(Path.GetFileName(shard), Assert.Throws<FileNotFoundException>(() => HfCheckpoint.Read(dir)).Message, StringComparison.Ordinal);
        File.Move(moved, shard);

        var single = Directory.CreateTempSubdirectory("bnbdist-hf1-").FullName;
        try
        {
            var sd = HfCheckpoint.StateDict(model);
            sd["not_in_model.weight"] = zeros(2);
            SafeTensorsFile.Save(Path.Combine(single, HfCheckpoint.SingleFile), sd);
            Assert.Equal("not_in_model.weight", Assert.Throws<StateDictException>(() => HfCheckpoint.Load(Quantized(new TinyModel(64, 16)), single)).Key);

            sd.Remove("not_in_model.weight");
            sd.Remove("lm_head.bias");
            SafeTensorsFile.Save(Path.Combine(single, HfCheckpoint.SingleFile), sd);
            Assert.Equal("lm_head.bias", Assert.Throws<StateDictException>(() => HfCheckpoint.Load(Quantized(new TinyModel(64, 16)), single)).Key);
        }
        finally
        {
            Directory.Delete(single, true);
        }
    }

    [Fact]
    public void MissingCheckpointSaysWhatWasExpected() =>
        Assert.Contains(HfCheckpoint.IndexFile, Assert.Throws<FileNotFoundException>(() => HfCheckpoint.Read(dir)).Message, StringComparison.Ordinal);

    private static TinyModel Quantized(TinyModel m)
    {
        ModelSurgery.QuantizeLinears(m, new BitsAndBytesConfig { ComputeDType = ScalarType.Float32 });
        return m;
    }
}
