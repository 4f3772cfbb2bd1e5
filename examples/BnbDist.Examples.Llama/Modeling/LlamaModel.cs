using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>The decoder stack (Hugging Face's <c>LlamaModel</c>): <c>embed_tokens</c>, <c>layers.N</c>, <c>norm</c>. Maps ids [B, T] to hidden states [B, T, hidden].</summary>
public sealed class LlamaModel : Module<Tensor, Tensor>
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<Module<Tensor, Tensor>> layers;
    private readonly Module<Tensor, Tensor> norm;

    /// <summary>Creates the stack from a validated config.</summary>
    public LlamaModel(LlamaConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LlamaModel))
    {
        Config = config.Validated();
        embed_tokens = Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        layers = new ModuleList<Module<Tensor, Tensor>>([.. Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new LlamaDecoderLayer(config, device, dtype))]);
        norm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>The config the stack was built from.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The token embedding (also the output head when embeddings are tied).</summary>
    public Embedding EmbedTokens => embed_tokens;

    /// <summary>The decoder layers, in order (slots may be replaced by wrappers, e.g. sharding).</summary>
    public ModuleList<Module<Tensor, Tensor>> Layers => layers;

    /// <summary>
    /// Activation checkpointing of every decoder layer while grad mode is on (Hugging Face's
    /// <c>gradient_checkpointing_enable()</c>): only each layer's input is kept, and backward recomputes the layer (see
    /// <see cref="ActivationCheckpoint"/>). Off by default.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <inheritdoc/>
    /// <exception cref="SequenceTooLongException">T exceeds <see cref="LlamaConfig.MaxPositionEmbeddings"/>.</exception>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 2 || input.dtype != ScalarType.Int64)
        {
            throw new ArgumentException($"input ids must be int64 [batch, seq]; got {input.dtype} [{string.Join(", ", input.shape)}].", nameof(input));
        }

        SequenceTooLongException.ThrowIfTooLong(input.shape[1], Config);
        using var scope = NewDisposeScope();
        var h = embed_tokens.call(input);
        var checkpoint = GradientCheckpointing && is_grad_enabled();
        foreach (var layer in layers)
        {
            h = checkpoint ? ActivationCheckpoint.Apply(layer, h) : layer.call(h);
        }

        return norm.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A Llama causal LM (Hugging Face's <c>LlamaForCausalLM</c>): <c>model</c> plus <c>lm_head</c> (absent when
/// <c>tie_word_embeddings</c>, then the embedding matrix is the head). Parameter names match Hugging Face's, so its
/// safetensors load by name and model surgery finds q/k/v/o/gate/up/down_proj.
/// </summary>
public sealed class LlamaForCausalLM : Module<Tensor, Tensor>
{
    private readonly LlamaModel model;
    private readonly Module<Tensor, Tensor>? lm_head;

    /// <summary>Creates the model with Hugging Face's initialization (normal(0, initializer_range), unit norms).</summary>
    /// <param name="config">The shape; validated here.</param>
    /// <param name="device">Where to allocate the weights (default CPU).</param>
    /// <param name="dtype">Weight dtype (default float32).</param>
    public LlamaForCausalLM(LlamaConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LlamaForCausalLM))
    {
        ArgumentNullException.ThrowIfNull(config);
        model = new LlamaModel(config, device, dtype);
        lm_head = config.TieWordEmbeddings ? null : Linear(config.HiddenSize, config.VocabSize, hasBias: false, device, dtype);
        RegisterComponents();
        InitializeWeights(config.InitializerRange);
    }

    /// <summary>The config the model was built from.</summary>
    public LlamaConfig Config => model.Config;

    /// <summary>The decoder stack.</summary>
    public LlamaModel Model => model;

    /// <summary>The output head, or null when tied to the embedding.</summary>
    public Module<Tensor, Tensor>? LmHead => lm_head;

    /// <summary>Logits [B, T, vocab] for ids [B, T].</summary>
    /// <exception cref="SequenceTooLongException">T exceeds <see cref="LlamaConfig.MaxPositionEmbeddings"/>.</exception>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var h = model.call(input);
        var logits = lm_head is null ? functional.linear(h, model.EmbedTokens.weight!) : lm_head.call(h);
        return logits.MoveToOuterDisposeScope();
    }

    private void InitializeWeights(double std)
    {
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal))
            {
                continue; // RMSNorm scales start at one
            }

            if (name.EndsWith(".bias", StringComparison.Ordinal))
            {
                p.zero_();
            }
            else
            {
                p.normal_(0, std);
            }
        }
    }
}
