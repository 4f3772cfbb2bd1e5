using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Training;
using BnbDist.Nn.Surgery;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>Tests that seed and draw from the process-wide CPU generator (dropout masks): no other test may draw meanwhile.</summary>
[CollectionDefinition("global-rng", DisableParallelization = true)]
public sealed class GlobalRngCollection;

/// <summary>Activation checkpointing changes memory, not results: same loss and same gradients as without it.</summary>
[Collection("global-rng")]
public sealed class ActivationCheckpointTests
{
    /// <summary>
    /// A 4-bit + LoRA model (frozen embedding: the first layer's input needs no grad) with LoRA dropout 0.2, and a plain
    /// fp32 model with every parameter trainable (embedding grads flow through the checkpoints): loss and every gradient
    /// equal the unchecked run's. Dropout makes the comparison fail unless the recomputation replays the forward's masks.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CheckpointedLossAndGradientsEqualThePlainOnes(bool qlora)
    {
        manual_seed(11);
        var model = new LlamaForCausalLM(TinyLlama.Config());
        if (qlora)
        {
            ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { QuantType = QuantType.NF4, UseDoubleQuant = true, BlockSize = 64 });
            ModelSurgery.AddLora(model, new LoraConfig
            {
                R = 4,
                Alpha = 8,
                Dropout = 0.2,
                TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            });
            using (no_grad())
            {
                foreach (var (_, layer) in ModelSurgery.Adapters(model))
                {
                    layer.LoraB.normal_(0, 0.05); // B starts at zero; make A's gradients non-zero too
                }
            }

            foreach (var (name, p) in model.named_parameters())
            {
                p.requires_grad = name.Contains(".lora_", StringComparison.Ordinal);
            }
        }

        model.train();
        using var ids = randint(0, 300, [2, 12], dtype: ScalarType.Int64);
        var (plainLoss, plainGrads) = LossAndGrads(model, ids, checkpointing: false);
        var (ckptLoss, ckptGrads) = LossAndGrads(model, ids, checkpointing: true);

        Assert.Equal(plainLoss, ckptLoss, 6);
        Assert.Equal(plainGrads.Keys, ckptGrads.Keys);
        Assert.Contains(plainGrads.Keys, k => k.Contains(qlora ? "layers.0.self_attn.q_proj.lora_A" : "embed_tokens", StringComparison.Ordinal));
        foreach (var (name, g) in plainGrads)
        {
            var c = ckptGrads[name];
            Assert.True(g.abs().max().item<float>() > 0, $"{name}: zero gradient proves nothing");
            Assert.True(g.allclose(c, rtol: 1e-5, atol: 1e-7), $"{name}: max diff {(g - c).abs().max().item<float>()}");
        }
    }

    /// <summary>Without grad mode the checkpoint is a plain call: same output, nothing recorded.</summary>
    [Fact]
    public void UnderNoGradItIsAPlainCall()
    {
        manual_seed(12);
        var layer = new LlamaDecoderLayer(TinyLlama.Config());
        using var x = randn(2, 5, 32);
        using var _ = no_grad();
        using var plain = layer.call(x);
        using var ckpt = ActivationCheckpoint.Apply(layer, x);
        Assert.False(ckpt.requires_grad);
        Assert.True(plain.allclose(ckpt, rtol: 0, atol: 0));
    }

    private static (double Loss, Dictionary<string, Tensor> Grads) LossAndGrads(LlamaForCausalLM model, Tensor ids, bool checkpointing)
    {
        model.Model.GradientCheckpointing = checkpointing;
        model.zero_grad();
        manual_seed(99); // same dropout masks for both runs
        using var loss = CausalLm.Loss(model.call(ids), ids);
        loss.backward();
        ActivationCheckpoint.ThrowIfBackwardFailed();
        var grads = model.named_parameters().Where(p => p.parameter.requires_grad && p.parameter.grad is not null)
            .ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        return (loss.item<float>(), grads);
    }
}
