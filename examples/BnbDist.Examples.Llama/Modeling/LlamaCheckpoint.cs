using System.Text.Json.Nodes;
using BnbDist.Examples.Llama.Tokenization;
using BnbDist.Nn.Checkpoints;
using BnbDist.Nn.Surgery;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>A model directory loaded together: config, tokenizer (checked against the config) and weights.</summary>
/// <param name="Model">The model.</param>
/// <param name="Tokenizer">Its tokenizer.</param>
/// <param name="Config">Its config.</param>
/// <param name="Directory">Where it was loaded from.</param>
public sealed record PretrainedLlama(LlamaForCausalLM Model, BpeTokenizer Tokenizer, LlamaConfig Config, string Directory);

/// <summary>
/// Hugging Face-layout model directories: <c>config.json</c>, weights as <c>model.safetensors</c> or shards with
/// <c>model.safetensors.index.json</c> (dense, or bitsandbytes 4-/8-bit when the config has a bitsandbytes
/// <c>quantization_config</c>), and <c>tokenizer.json</c>.
/// </summary>
public static class LlamaCheckpoint
{
    /// <summary>Config file name.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>Tokenizer file name.</summary>
    public const string TokenizerFile = "tokenizer.json";

    /// <summary>Whether a directory holds a config and weights.</summary>
    public static bool Exists(string directory) =>
        File.Exists(Path.Combine(directory, ConfigFile)) &&
        (File.Exists(Path.Combine(directory, HfCheckpoint.SingleFile)) || File.Exists(Path.Combine(directory, HfCheckpoint.IndexFile)));

    /// <summary>Loads config, tokenizer and weights; the tokenizer is checked before the weights are read.</summary>
    /// <exception cref="FileNotFoundException">A file is missing (named).</exception>
    /// <exception cref="TokenizerMismatchException">The tokenizer is not the model's.</exception>
    public static PretrainedLlama Load(string directory, Device? device = null, ScalarType? dtype = null)
    {
        var config = ReadConfig(directory);
        var tokenizer = ReadTokenizer(directory, config);
        return new PretrainedLlama(LoadModel(directory, config, device, dtype), tokenizer, config, directory);
    }

    /// <summary>Reads and validates <c>config.json</c>.</summary>
    public static LlamaConfig ReadConfig(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        return LlamaConfig.Load(Path.Combine(directory, ConfigFile));
    }

    /// <summary>Reads <c>tokenizer.json</c> from <paramref name="directory"/> and checks it against <paramref name="config"/>.</summary>
    public static BpeTokenizer ReadTokenizer(string directory, LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var path = Path.Combine(directory, TokenizerFile);
        var tokenizer = BpeTokenizer.Load(path);
        CheckTokenizer(tokenizer, config, path, Path.Combine(directory, ConfigFile));
        return tokenizer;
    }

    /// <summary>
    /// Checks that a tokenizer fits a model: every id it can produce has an embedding row, and, when the config
    /// records a tokenizer fingerprint, it is this tokenizer's.
    /// </summary>
    /// <exception cref="TokenizerMismatchException">It does not fit.</exception>
    public static void CheckTokenizer(BpeTokenizer tokenizer, LlamaConfig config, string tokenizerPath = TokenizerFile, string configPath = ConfigFile)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(config);
        if (tokenizer.VocabSize > config.VocabSize)
        {
            throw new TokenizerMismatchException(tokenizerPath, configPath,
                $"it has {tokenizer.VocabSize} token ids but the model's vocab_size is {config.VocabSize}.");
        }

        if (config.TokenizerFingerprint is { } expected && !string.Equals(expected, tokenizer.Fingerprint, StringComparison.OrdinalIgnoreCase))
        {
            throw new TokenizerMismatchException(tokenizerPath, configPath,
                $"its fingerprint {tokenizer.Fingerprint} (vocab {tokenizer.VocabSize}) is not the {expected} the model was trained with (vocab_size {config.VocabSize}).");
        }
    }

    /// <summary>
    /// Builds the model from <paramref name="config"/> (default: the directory's) and loads its weights by name. A
    /// bitsandbytes <c>quantization_config</c> makes the linears Linear4bit/Linear8bitLt first (except
    /// <c>llm_int8_skip_modules</c>, default <c>lm_head</c>), so a bnb-4bit checkpoint loads as it was saved.
    /// </summary>
    /// <exception cref="FileNotFoundException">No weights in the directory.</exception>
    /// <exception cref="BnbDist.Nn.StateDictException">A missing, unexpected or mis-shaped tensor (named).</exception>
    public static LlamaForCausalLM LoadModel(string directory, LlamaConfig? config = null, Device? device = null, ScalarType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        config ??= ReadConfig(directory);
        if (!Exists(directory))
        {
            throw new FileNotFoundException(
                $"No model weights in {directory}: expected {ConfigFile} and {HfCheckpoint.SingleFile} (or {HfCheckpoint.IndexFile} with its shards). " +
                $"The examples' base model is made by `{DataCache.PretrainCommand}`.", Path.Combine(directory, HfCheckpoint.SingleFile));
        }

        var model = new LlamaForCausalLM(config, dtype: dtype);
        if (BitsAndBytes(config) is { } bnb)
        {
            ModelSurgery.QuantizeLinears(model, bnb);
        }

        HfCheckpoint.Load(model, directory, device);
        return model;
    }

    /// <summary>
    /// Writes a model directory: <c>config.json</c> (with the tokenizer's fingerprint), the weights (quantized layers in
    /// bitsandbytes' form; shards above <paramref name="maxShardBytes"/>) and <c>tokenizer.json</c>. Files are
    /// written into a temporary sibling folder that replaces <paramref name="directory"/> at the end, so an
    /// interrupted save never leaves a directory that looks complete.
    /// </summary>
    public static void Save(LlamaForCausalLM model, BpeTokenizer tokenizer, string directory, long maxShardBytes = 5L << 30)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(directory);
        var full = Path.GetFullPath(directory);
        var tmp = full.TrimEnd(Path.DirectorySeparatorChar) + $".tmp-{Environment.ProcessId}";
        if (Directory.Exists(tmp))
        {
            Directory.Delete(tmp, recursive: true);
        }

        Directory.CreateDirectory(tmp);
        HfCheckpoint.Save(model, tmp, maxShardBytes);
        tokenizer.Save(Path.Combine(tmp, TokenizerFile));
        var dtype = model.parameters().First().dtype;
        (model.Config with
        {
            TokenizerFingerprint = tokenizer.Fingerprint,
            TorchDType = dtype switch { ScalarType.BFloat16 => "bfloat16", ScalarType.Float16 => "float16", _ => "float32" },
            EosTokenId = tokenizer.EndOfTextId ?? model.Config.EosTokenId,
        }).Save(Path.Combine(tmp, ConfigFile));
        if (Directory.Exists(full))
        {
            Directory.Delete(full, recursive: true);
        }

        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        Directory.Move(tmp, full);
    }

    /// <summary>The bitsandbytes settings of a config's <c>quantization_config</c>, or null if it has none.</summary>
    /// <exception cref="LlamaConfigException">A quantization method other than bitsandbytes.</exception>
    public static BitsAndBytesConfig? BitsAndBytes(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.QuantizationConfig is not JsonObject q)
        {
            return null;
        }

        var method = (string?)q["quant_method"] ?? "bitsandbytes";
        if (method != "bitsandbytes")
        {
            throw new LlamaConfigException("config", "quantization_config.quant_method", $"is \"{method}\"; only bitsandbytes checkpoints load here.");
        }

        var in4 = (bool?)q["load_in_4bit"] ?? false;
        var in8 = (bool?)q["load_in_8bit"] ?? false;
        if (in4 == in8)
        {
            throw new LlamaConfigException("config", "quantization_config", "must set exactly one of load_in_4bit and load_in_8bit.");
        }

        var skip = q["llm_int8_skip_modules"] is JsonArray s ? s.Select(n => (string?)n ?? string.Empty).ToList() : ["lm_head"];
        var quantType = ((string?)q["bnb_4bit_quant_type"] ?? "fp4").ToUpperInvariant() switch
        {
            "NF4" => BnbDist.QuantType.NF4,
            "FP4" => BnbDist.QuantType.FP4,
            var other => throw new LlamaConfigException("config", "quantization_config.bnb_4bit_quant_type", $"is \"{other}\"; nf4 or fp4 expected."),
        };
        return new BitsAndBytesConfig
        {
            LoadIn4Bit = in4,
            QuantType = quantType,
            UseDoubleQuant = (bool?)q["bnb_4bit_use_double_quant"] ?? false,
            ComputeDType = (string?)q["bnb_4bit_compute_dtype"] switch
            {
                "bfloat16" => ScalarType.BFloat16,
                "float16" => ScalarType.Float16,
                "float32" => ScalarType.Float32,
                _ => null,
            },
            Int8Threshold = (float?)(double?)q["llm_int8_threshold"] ?? 6.0f,
            SkipModules = skip,
        };
    }
}
