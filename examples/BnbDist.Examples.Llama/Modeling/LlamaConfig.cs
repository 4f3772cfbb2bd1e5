using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>
/// A Llama model's shape, read from and written to Hugging Face's <c>config.json</c> (same field names and defaults as
/// <c>transformers.LlamaConfig</c>). Unknown fields are ignored on load.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>
    /// TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632, vocab 32000, untied head): the
    /// ≥ 1B model of the speed and sharding figures, with random weights.
    /// </summary>
    public static readonly LlamaConfig TinyLlama1B = new()
    {
        VocabSize = 32000,
        HiddenSize = 2048,
        IntermediateSize = 5632,
        NumHiddenLayers = 22,
        NumAttentionHeads = 32,
        NumKeyValueHeads = 4,
        MaxPositionEmbeddings = 2048,
        RmsNormEps = 1e-5,
        TieWordEmbeddings = false,
    };

    /// <summary>Embedding rows (token ids 0..vocab_size-1).</summary>
    [JsonPropertyName("vocab_size")]
    public int VocabSize { get; init; } = 32000;

    /// <summary>Model width.</summary>
    [JsonPropertyName("hidden_size")]
    public int HiddenSize { get; init; } = 4096;

    /// <summary>SwiGLU MLP width.</summary>
    [JsonPropertyName("intermediate_size")]
    public int IntermediateSize { get; init; } = 11008;

    /// <summary>Decoder layers.</summary>
    [JsonPropertyName("num_hidden_layers")]
    public int NumHiddenLayers { get; init; } = 32;

    /// <summary>Query heads.</summary>
    [JsonPropertyName("num_attention_heads")]
    public int NumAttentionHeads { get; init; } = 32;

    /// <summary>Key/value heads (grouped-query attention); null = <see cref="NumAttentionHeads"/>.</summary>
    [JsonPropertyName("num_key_value_heads")]
    public int? NumKeyValueHeads { get; init; }

    /// <summary>Per-head width; null = hidden_size / num_attention_heads.</summary>
    [JsonPropertyName("head_dim")]
    public int? HeadDimOverride { get; init; }

    /// <summary>RMSNorm epsilon.</summary>
    [JsonPropertyName("rms_norm_eps")]
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>Rotary embedding base.</summary>
    [JsonPropertyName("rope_theta")]
    public double RopeTheta { get; init; } = 10000;

    /// <summary>Rotary scaling; only null (none) is supported.</summary>
    [JsonPropertyName("rope_scaling")]
    public JsonObject? RopeScaling { get; init; }

    /// <summary>Longest sequence the model accepts.</summary>
    [JsonPropertyName("max_position_embeddings")]
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>Whether the output head shares the token embedding matrix.</summary>
    [JsonPropertyName("tie_word_embeddings")]
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Bias on q/k/v/o projections.</summary>
    [JsonPropertyName("attention_bias")]
    public bool AttentionBias { get; init; }

    /// <summary>Bias on gate/up/down projections.</summary>
    [JsonPropertyName("mlp_bias")]
    public bool MlpBias { get; init; }

    /// <summary>MLP activation; only "silu" (SwiGLU) is supported.</summary>
    [JsonPropertyName("hidden_act")]
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Std of the normal initialization of linear and embedding weights.</summary>
    [JsonPropertyName("initializer_range")]
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>Always "llama".</summary>
    [JsonPropertyName("model_type")]
    public string ModelType { get; init; } = "llama";

    /// <summary>Hugging Face's architecture list.</summary>
    [JsonPropertyName("architectures")]
    public IReadOnlyList<string> Architectures { get; init; } = ["LlamaForCausalLM"];

    /// <summary>dtype the weights were saved in (informational).</summary>
    [JsonPropertyName("torch_dtype")]
    public string? TorchDType { get; init; }

    /// <summary>Beginning-of-sequence id, if any.</summary>
    [JsonPropertyName("bos_token_id")]
    public int? BosTokenId { get; init; }

    /// <summary>End-of-sequence id, if any.</summary>
    [JsonPropertyName("eos_token_id")]
    public int? EosTokenId { get; init; }

    /// <summary>bitsandbytes settings of a quantized checkpoint (Hugging Face's <c>quantization_config</c>), or null.</summary>
    [JsonPropertyName("quantization_config")]
    public JsonObject? QuantizationConfig { get; init; }

    /// <summary><see cref="Tokenization.BpeTokenizer.Fingerprint"/> of the tokenizer the model was trained with (BnbDist's own field).</summary>
    [JsonPropertyName("bnbdist_tokenizer_sha256")]
    public string? TokenizerFingerprint { get; init; }

    /// <summary>Key/value heads in effect.</summary>
    [JsonIgnore]
    public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;

    /// <summary>Per-head width in effect.</summary>
    [JsonIgnore]
    public int HeadDim => HeadDimOverride ?? (NumAttentionHeads > 0 ? HiddenSize / NumAttentionHeads : 0);

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    /// <summary>Reads and validates a <c>config.json</c>.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="LlamaConfigException">Invalid JSON or an unsupported/inconsistent field (named).</exception>
    public static LlamaConfig Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"model config not found: {path}", path);
        }

        LlamaConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<LlamaConfig>(File.ReadAllText(path), Options);
        }
        catch (JsonException ex)
        {
            throw new LlamaConfigException(path, ex.Path ?? "(root)", $"invalid JSON: {ex.Message}", ex);
        }

        return (config ?? throw new LlamaConfigException(path, "(root)", "is null.")).Validated(path);
    }

    /// <summary>Writes the config as JSON (atomically: temp file, then rename).</summary>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var tmp = path + $".{Environment.ProcessId}.tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(this, Options));
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Checks every field the model depends on; returns this config.</summary>
    /// <param name="source">Names the config in messages (a file path, or "config").</param>
    /// <exception cref="LlamaConfigException">The first bad field, named.</exception>
    public LlamaConfig Validated(string source = "config")
    {
        void Positive(string field, long value)
        {
            if (value <= 0)
            {
                throw new LlamaConfigException(source, field, $"must be positive; got {value}.");
            }
        }

        Positive("vocab_size", VocabSize);
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumHiddenLayers);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", KeyValueHeads);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        if (HeadDimOverride is null && HiddenSize % NumAttentionHeads != 0)
        {
            throw new LlamaConfigException(source, "hidden_size", $"{HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}.");
        }

        Positive("head_dim", HeadDim);
        if (HeadDim % 2 != 0)
        {
            throw new LlamaConfigException(source, "head_dim", $"rotary embeddings need an even head_dim; got {HeadDim}.");
        }

        if (NumAttentionHeads % KeyValueHeads != 0)
        {
            throw new LlamaConfigException(source, "num_key_value_heads", $"{KeyValueHeads} does not divide num_attention_heads {NumAttentionHeads}.");
        }

        if (!(RmsNormEps > 0) || !(RopeTheta > 0))
        {
            throw new LlamaConfigException(source, RmsNormEps > 0 ? "rope_theta" : "rms_norm_eps", "must be positive.");
        }

        if (RopeScaling is not null)
        {
            throw new LlamaConfigException(source, "rope_scaling", $"is {RopeScaling.ToJsonString()}; only null (plain RoPE) is supported.");
        }

        if (HiddenAct != "silu")
        {
            throw new LlamaConfigException(source, "hidden_act", $"is \"{HiddenAct}\"; only \"silu\" (SwiGLU) is supported.");
        }

        return this;
    }
}

/// <summary>A <c>config.json</c> field that is missing, invalid or unsupported; names the file and the field.</summary>
public sealed class LlamaConfigException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public LlamaConfigException(string source, string field, string problem, Exception? inner = null)
        : base($"{source}: {field} {problem}", inner)
    {
        ConfigSource = source;
        Field = field;
    }

    /// <summary>Creates the exception.</summary>
    public LlamaConfigException()
        : this("config", "?", "is invalid.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public LlamaConfigException(string message)
        : this("config", "?", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public LlamaConfigException(string message, Exception innerException)
        : this("config", "?", message, innerException)
    {
    }

    /// <summary>The offending field (Hugging Face name).</summary>
    public string Field { get; }

    /// <summary>The config file or description.</summary>
    public string ConfigSource { get; }
}
