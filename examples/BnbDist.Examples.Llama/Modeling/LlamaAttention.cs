using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>
/// Causal self-attention with rotary embeddings and grouped-query attention (Hugging Face's <c>LlamaAttention</c>):
/// <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>o_proj</c>. Key/value heads are repeated to the query heads
/// (<c>repeat_kv</c>) and the product runs in <c>scaled_dot_product_attention</c> with its causal mask.
/// </summary>
public sealed class LlamaAttention : Module<Tensor, Tensor>
{
    // Declared as Module<Tensor, Tensor> so model surgery can swap in Linear4bit or LoRA layers.
    private readonly Module<Tensor, Tensor> q_proj;
    private readonly Module<Tensor, Tensor> k_proj;
    private readonly Module<Tensor, Tensor> v_proj;
    private readonly Module<Tensor, Tensor> o_proj;
    private readonly int heads;
    private readonly int kvHeads;
    private readonly int headDim;
    private readonly double ropeTheta;

    /// <summary>Creates the projections from the config.</summary>
    public LlamaAttention(LlamaConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LlamaAttention))
    {
        ArgumentNullException.ThrowIfNull(config);
        heads = config.NumAttentionHeads;
        kvHeads = config.KeyValueHeads;
        headDim = config.HeadDim;
        ropeTheta = config.RopeTheta;
        var bias = config.AttentionBias;
        q_proj = Linear(config.HiddenSize, (long)heads * headDim, bias, device, dtype);
        k_proj = Linear(config.HiddenSize, (long)kvHeads * headDim, bias, device, dtype);
        v_proj = Linear(config.HiddenSize, (long)kvHeads * headDim, bias, device, dtype);
        o_proj = Linear((long)heads * headDim, config.HiddenSize, bias, device, dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (input.shape[0], input.shape[1]);
        var q = q_proj.call(input).view(b, t, heads, headDim).transpose(1, 2);
        var k = k_proj.call(input).view(b, t, kvHeads, headDim).transpose(1, 2);
        var v = v_proj.call(input).view(b, t, kvHeads, headDim).transpose(1, 2);
        var (cos, sin) = RotaryEmbedding.SharedTables(t, headDim, ropeTheta, input.device, q.dtype);
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);
        if (kvHeads != heads)
        {
            // Each key/value head serves heads / kvHeads consecutive query heads (Hugging Face's repeat_kv).
            k = k.repeat_interleave(heads / kvHeads, dim: 1);
            v = v.repeat_interleave(heads / kvHeads, dim: 1);
        }

        var attended = functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        var merged = attended.transpose(1, 2).reshape(b, t, (long)heads * headDim);
        return o_proj.call(merged).MoveToOuterDisposeScope();
    }
}
