using BnbDist.Examples.Llama.Modeling;
using BnbDist.Nn;
using BnbDist.Nn.Surgery;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>The Llama decoder: shapes, causality, GQA against a naive reference, rotary properties, HF names, config checks.</summary>
public sealed class ModelTests
{
    [Fact]
    public void ForwardGivesLogitsPerPositionAndTokenId()
    {
        manual_seed(1);
        var model = new LlamaForCausalLM(TinyLlama.Config());
        using var ids = randint(0, 64, [3, 10], dtype: ScalarType.Int64);
        using var logits = model.call(ids);
        Assert.Equal([3L, 10, 300], logits.shape);
        Assert.True(logits.isfinite().all().item<bool>());
    }

    [Fact]
    public void FutureTokensDoNotChangeEarlierLogits()
    {
        manual_seed(2);
        var model = new LlamaForCausalLM(TinyLlama.Config());
        using var ids = randint(0, 64, [2, 12], dtype: ScalarType.Int64);
        using var changed = ids.clone();
        changed[.., 7] = (ids[.., 7] + 1) % 64;
        using var _ = no_grad();
        using var a = model.call(ids);
        using var b = model.call(changed);
        Assert.True(a[.., ..7].allclose(b[.., ..7], rtol: 0, atol: 1e-6), "positions before the change moved");
        Assert.False(a[.., 7..].allclose(b[.., 7..], rtol: 0, atol: 1e-3), "positions from the change on did not move");
    }

    [Theory]
    [InlineData(4, 2)] // grouped-query: each kv head serves two query heads
    [InlineData(4, 1)] // multi-query
    [InlineData(4, 4)] // plain multi-head
    public void AttentionMatchesANaiveReference(int heads, int kvHeads)
    {
        manual_seed(3);
        var config = TinyLlama.Config(heads: heads, kvHeads: kvHeads);
        var attention = new LlamaAttention(config);
        using var x = randn(2, 9, 32);
        using var _ = no_grad();
        using var actual = attention.call(x);
        using var expected = NaiveAttention(attention.state_dict(), x, heads, kvHeads, config.HeadDim, config.RopeTheta);
        Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-5), $"max diff {(actual - expected).abs().max().item<float>()}");
    }

    [Fact]
    public void RotaryEmbeddingKeepsNormsAndDependsOnlyOnRelativePosition()
    {
        manual_seed(4);
        var (cos, sin) = RotaryEmbedding.Tables(20, 8, 10000, CPU, ScalarType.Float32);
        using var q = randn(1, 1, 1, 8);
        using var k = randn(1, 1, 1, 8);
        Tensor At(Tensor v, int pos) => RotaryEmbedding.Apply(v, cos[pos..(pos + 1)], sin[pos..(pos + 1)]);
        Assert.True(At(q, 5).norm().allclose(q.norm(), rtol: 1e-5));
        var d1 = (At(q, 7) * At(k, 3)).sum().item<float>();
        var d2 = (At(q, 15) * At(k, 11)).sum().item<float>();
        Assert.Equal(d1, d2, 4);
        Assert.NotEqual(d1, (At(q, 7) * At(k, 2)).sum().item<float>(), 3);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ParameterNamesAreHuggingFaces(bool tied)
    {
        var config = TinyLlama.Config(tied: tied);
        var keys = new LlamaForCausalLM(config).state_dict().Keys.Order(StringComparer.Ordinal).ToList();
        var expected = new List<string> { "model.embed_tokens.weight", "model.norm.weight" };
        for (var i = 0; i < config.NumHiddenLayers; i++)
        {
            expected.AddRange(new[]
            {
                "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                "input_layernorm", "post_attention_layernorm",
            }.Select(n => $"model.layers.{i}.{n}.weight"));
        }

        if (!tied)
        {
            expected.Add("lm_head.weight");
        }

        Assert.Equal(expected.Order(StringComparer.Ordinal), keys);
    }

    [Fact]
    public void TiedHeadIsTheEmbeddingMatrix()
    {
        manual_seed(5);
        var model = new LlamaForCausalLM(TinyLlama.Config(tied: true));
        Assert.Null(model.LmHead);
        using var ids = randint(0, 64, [1, 4], dtype: ScalarType.Int64);
        using var _ = no_grad();
        using var h = model.Model.call(ids);
        using var expected = h.matmul(model.Model.EmbedTokens.weight!.t());
        Assert.True(model.call(ids).allclose(expected, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void SurgeryFindsEveryProjectionByName()
    {
        manual_seed(6);
        var model = new LlamaForCausalLM(TinyLlama.Config());
        using var ids = randint(0, 64, [2, 8], dtype: ScalarType.Int64);
        using var before = model.call(ids).detach();

        var quantized = ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { QuantType = QuantType.NF4, ComputeDType = ScalarType.Float32 });
        Assert.Equal(14, quantized.Count); // 7 projections x 2 layers; lm_head is skipped
        Assert.Contains("model.layers.1.mlp.down_proj", quantized);
        Assert.DoesNotContain("lm_head", quantized);

        string[] targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
        var adapted = ModelSurgery.AddLora(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = targets });
        Assert.Equal(14, adapted.Count);
        Assert.All(ModelSurgery.Adapters(model), a => Assert.IsType<Linear4bit>(a.Layer.BaseLayer, exactMatch: false));

        // The forward uses the swapped layers: NF4 changes the output a little; LoRA (B = 0) adds nothing yet.
        using var after = model.call(ids);
        var rel = ((after - before).norm() / before.norm()).item<float>();
        Assert.True(rel is > 0 and < 0.2f, $"relative change {rel}");
        // r (in + out) per projection: q, o 32->32; k, v 32->16; gate, up 32->48; down 48->32; two layers.
        var lora = model.named_parameters().Where(p => p.name.Contains(".lora_", StringComparison.Ordinal)).ToList();
        Assert.Equal(2 * 4 * ((2 * 64) + (2 * 48) + (3 * 80)), lora.Sum(p => p.parameter.numel()));
        Assert.All(lora, p => Assert.True(p.parameter.requires_grad, p.name));
        Assert.All(model.named_parameters().Where(p => p.name.Contains(".base_layer.", StringComparison.Ordinal)), p => Assert.False(p.parameter.requires_grad, p.name));
    }

    [Fact]
    public void SequenceBeyondTheContextIsRejectedBeforeAnyCompute()
    {
        var model = new LlamaForCausalLM(TinyLlama.Config(maxPositions: 16));
        using var ids = zeros([1, 17], ScalarType.Int64);
        var ex = Assert.Throws<SequenceTooLongException>(() => model.call(ids));
        Assert.Contains("max_position_embeddings 16", ex.Message, StringComparison.Ordinal);
        Assert.Throws<SequenceTooLongException>(() => SequenceTooLongException.ThrowIfTooLong(17, model.Config));
        using var ok = zeros([1, 16], ScalarType.Int64);
        Assert.Equal(16, model.call(ok).shape[1]);
    }

    [Theory]
    [InlineData("num_key_value_heads")]
    [InlineData("hidden_size")]
    [InlineData("rope_scaling")]
    public void InconsistentConfigNamesTheField(string field)
    {
        var config = field switch
        {
            "num_key_value_heads" => TinyLlama.Config(heads: 4, kvHeads: 3),
            "hidden_size" => TinyLlama.Config(heads: 5, kvHeads: 5),
            _ => TinyLlama.Config() with { RopeScaling = new System.Text.Json.Nodes.JsonObject { ["type"] = "yarn" } },
        };
        Assert.Equal(field, Assert.Throws<LlamaConfigException>(() => new LlamaForCausalLM(config)).Field);
    }

    // Attention written out step by step: explicit RoPE with cos/sin of each position, explicit kv-head sharing,
    // an explicit -inf mask and softmax.
    private static Tensor NaiveAttention(Dictionary<string, Tensor> sd, Tensor x, int heads, int kvHeads, int d, double theta)
    {
        var (b, t) = (x.shape[0], x.shape[1]);
        Tensor Proj(string n) => functional.linear(x, sd[$"{n}.weight"]);
        var q = Proj("q_proj").view(b, t, heads, d);
        var k = Proj("k_proj").view(b, t, kvHeads, d);
        var v = Proj("v_proj").view(b, t, kvHeads, d);

        Tensor Rope(Tensor u)
        {
            var outp = zeros_like(u);
            for (var pos = 0; pos < t; pos++)
            {
                for (var i = 0; i < d / 2; i++)
                {
                    var angle = pos / Math.Pow(theta, 2.0 * i / d);
                    var (c, s) = ((float)Math.Cos(angle), (float)Math.Sin(angle));
                    var x1 = u[.., pos, .., i];
                    var x2 = u[.., pos, .., i + (d / 2)];
                    outp[.., pos, .., i] = (x1 * c) - (x2 * s);
                    outp[.., pos, .., i + (d / 2)] = (x2 * c) + (x1 * s);
                }
            }

            return outp;
        }

        q = Rope(q);
        k = Rope(k);
        var output = zeros(b, t, heads, d);
        var mask = ones(t, t).triu(1).to_type(ScalarType.Bool);
        for (var h = 0; h < heads; h++)
        {
            var kv = h / (heads / kvHeads);
            var scores = q[.., .., h].matmul(k[.., .., kv].transpose(1, 2)) / Math.Sqrt(d);
            scores = scores.masked_fill(mask, double.NegativeInfinity);
            output[.., .., h] = scores.softmax(-1).matmul(v[.., .., kv]);
        }

        return functional.linear(output.reshape(b, t, heads * d), sd["o_proj.weight"]);
    }
}
