using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>One pre-norm decoder block: <c>x + self_attn(input_layernorm(x))</c>, then <c>+ mlp(post_attention_layernorm(·))</c>.</summary>
public sealed class LlamaDecoderLayer : Module<Tensor, Tensor>
{
    private readonly Module<Tensor, Tensor> self_attn;
    private readonly Module<Tensor, Tensor> mlp;
    private readonly Module<Tensor, Tensor> input_layernorm;
    private readonly Module<Tensor, Tensor> post_attention_layernorm;

    /// <summary>Creates the block from the config.</summary>
    public LlamaDecoderLayer(LlamaConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LlamaDecoderLayer))
    {
        ArgumentNullException.ThrowIfNull(config);
        self_attn = new LlamaAttention(config, device, dtype);
        mlp = new LlamaMlp(config, device, dtype);
        input_layernorm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        post_attention_layernorm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var h = input + self_attn.call(input_layernorm.call(input));
        return (h + mlp.call(post_attention_layernorm.call(h))).MoveToOuterDisposeScope();
    }
}
