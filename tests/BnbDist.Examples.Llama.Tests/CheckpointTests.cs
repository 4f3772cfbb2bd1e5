using System.Text.Json.Nodes;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Tokenization;
using BnbDist.Nn;
using BnbDist.Nn.Checkpoints;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>Model directories: HF-named safetensors (single, sharded, bnb-4bit) load to identical outputs; bad directories fail clearly.</summary>
public sealed class CheckpointTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("bnbdist-ckpt-").FullName;
    private readonly BpeTokenizer tokenizer = BpeTokenizer.Train(TestText.Documents(5), 300);

    public void Dispose() => Directory.Delete(dir, true);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SavedDirectoryReloadsToIdenticalLogits(bool tied)
    {
        manual_seed(10);
        var model = new LlamaForCausalLM(TinyLlama.Config(tied: tied));
        var path = Path.Combine(dir, "m");
        LlamaCheckpoint.Save(model, tokenizer, path);
        Assert.True(File.Exists(Path.Combine(path, HfCheckpoint.SingleFile)));
        Assert.Equal(tied, !SafeTensorsFile.Open(Path.Combine(path, HfCheckpoint.SingleFile)).Contains("lm_head.weight"));

        var loaded = LlamaCheckpoint.Load(path);
        Assert.Equal(tokenizer.Fingerprint, loaded.Config.TokenizerFingerprint);
        Assert.Equal(["LlamaForCausalLM"], loaded.Config.Architectures);
        Assert.Equal(model.Config with { TokenizerFingerprint = tokenizer.Fingerprint, TorchDType = "float32", EosTokenId = 299 },
            loaded.Config with { Architectures = model.Config.Architectures });
        AssertSameLogits(model, loaded.Model);
    }

    [Fact]
    public void ShardedIndexAndBf16WeightsLoadByName()
    {
        manual_seed(11);
        var model = new LlamaForCausalLM(TinyLlama.Config());
        var path = Path.Combine(dir, "sharded");
        LlamaCheckpoint.Save(model, tokenizer, path, maxShardBytes: 8 << 10);
        Assert.True(File.Exists(Path.Combine(path, HfCheckpoint.IndexFile)));
        Assert.True(Directory.GetFiles(path, "model-*-of-*.safetensors").Length > 2);
        AssertSameLogits(model, LlamaCheckpoint.LoadModel(path));

        // Hugging Face checkpoints are usually bf16: tensors are converted to the model's dtype on load.
        var bf16 = Path.Combine(dir, "bf16");
        Directory.CreateDirectory(bf16);
        File.Copy(Path.Combine(path, LlamaCheckpoint.ConfigFile), Path.Combine(bf16, LlamaCheckpoint.ConfigFile));
        SafeTensorsFile.Save(Path.Combine(bf16, HfCheckpoint.SingleFile), model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.to_type(ScalarType.BFloat16)));
        var fromBf16 = LlamaCheckpoint.LoadModel(bf16);
        var embed = fromBf16.state_dict()["model.embed_tokens.weight"];
        Assert.Equal(ScalarType.Float32, embed.dtype);
        Assert.True(embed.equal(model.state_dict()["model.embed_tokens.weight"].to_type(ScalarType.BFloat16).to_type(ScalarType.Float32)).all().item<bool>());
    }

    [Fact]
    public void Bnb4bitDirectoryLoadsAsLinear4bitWithTheSameOutputs()
    {
        manual_seed(12);
        var model = new LlamaForCausalLM(TinyLlama.Config());
        var bnb = new JsonObject
        {
            ["quant_method"] = "bitsandbytes",
            ["load_in_4bit"] = true,
            ["bnb_4bit_quant_type"] = "nf4",
            ["bnb_4bit_use_double_quant"] = true,
            ["bnb_4bit_compute_dtype"] = "float32",
        };
        ModelSurgery.QuantizeLinears(model, LlamaCheckpoint.BitsAndBytes(model.Config with { QuantizationConfig = bnb })!);
        var path = Path.Combine(dir, "bnb");
        LlamaCheckpoint.Save(model, tokenizer, path);
        var config = LlamaCheckpoint.ReadConfig(path) with { QuantizationConfig = bnb };
        config.Save(Path.Combine(path, LlamaCheckpoint.ConfigFile));
        Assert.Contains("model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4", HfCheckpoint.Read(path).Keys);

        var loaded = LlamaCheckpoint.LoadModel(path);
        Assert.Equal(14, loaded.modules().Count(m => m is Linear4bit { QuantType: QuantType.NF4, IsQuantized: true }));
        AssertSameLogits(model, loaded);
    }

    [Fact]
    public void MissingWeightsOrConfigNameTheDirectory()
    {
        var empty = Path.Combine(dir, "empty");
        Directory.CreateDirectory(empty);
        var noConfig = Assert.Throws<FileNotFoundException>(() => LlamaCheckpoint.Load(empty));
        Assert.Contains(Path.Combine(empty, LlamaCheckpoint.ConfigFile), noConfig.Message, StringComparison.Ordinal);

        TinyLlama.Config().Save(Path.Combine(empty, LlamaCheckpoint.ConfigFile));
        var noWeights = Assert.Throws<FileNotFoundException>(() => LlamaCheckpoint.LoadModel(empty));
        Assert.Contains(empty, noWeights.Message, StringComparison.Ordinal);
        Assert.Contains(HfCheckpoint.SingleFile, noWeights.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TokenizerThatIsNotTheModelsIsRejectedBeforeWeightsLoad()
    {
        manual_seed(13);
        var path = Path.Combine(dir, "m");
        LlamaCheckpoint.Save(new LlamaForCausalLM(TinyLlama.Config()), tokenizer, path);

        // Same size, different merges: only the fingerprint can tell.
        var other = BpeTokenizer.Train(TestText.Documents(5, seed: 42), 300);
        other.Save(Path.Combine(path, LlamaCheckpoint.TokenizerFile));
        var ex = Assert.Throws<TokenizerMismatchException>(() => LlamaCheckpoint.Load(path));
        Assert.Contains(other.Fingerprint, ex.Message, StringComparison.Ordinal);
        Assert.Contains(Path.Combine(path, LlamaCheckpoint.TokenizerFile), ex.Message, StringComparison.Ordinal);

        // More ids than embedding rows.
        var bigger = BpeTokenizer.Train(TestText.Documents(5), 320);
        var noFingerprint = LlamaCheckpoint.ReadConfig(path) with { TokenizerFingerprint = null };
        Assert.Contains("vocab_size is 300", Assert.Throws<TokenizerMismatchException>(() => LlamaCheckpoint.CheckTokenizer(bigger, noFingerprint)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WrongShapeInTheCheckpointNamesTheTensor()
    {
        manual_seed(14);
        var path = Path.Combine(dir, "m");
        LlamaCheckpoint.Save(new LlamaForCausalLM(TinyLlama.Config()), tokenizer, path);
        var config = LlamaCheckpoint.ReadConfig(path) with { IntermediateSize = 40 };
        var ex = Assert.Throws<StateDictException>(() => LlamaCheckpoint.LoadModel(path, config));
        Assert.Contains("mlp", ex.Key, StringComparison.Ordinal);
    }

    private static void AssertSameLogits(LlamaForCausalLM expected, LlamaForCausalLM actual)
    {
        using var ids = randint(0, 64, [2, 8], dtype: ScalarType.Int64);
        using var _ = no_grad();
        Assert.True(expected.call(ids).equal(actual.call(ids)).all().item<bool>(), "logits differ after reload");
    }
}
