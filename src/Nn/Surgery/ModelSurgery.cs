using System.Text.Json;
using System.Text.RegularExpressions;
using BnbDist.Nn.Lora;
using BnbDist.Serialization;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Nn.Surgery;

/// <summary>How to quantize a model's linear layers (after Hugging Face's <c>BitsAndBytesConfig</c>).</summary>
public sealed record BitsAndBytesConfig
{
    /// <summary>4-bit (Linear4bit) rather than 8-bit (Linear8bitLt).</summary>
    public bool LoadIn4Bit { get; init; } = true;

    /// <summary>NF4 or FP4 (<c>bnb_4bit_quant_type</c>).</summary>
    public QuantType QuantType { get; init; } = QuantType.NF4;

    /// <summary>Double quantization (<c>bnb_4bit_use_double_quant</c>).</summary>
    public bool UseDoubleQuant { get; init; } = true;

    /// <summary>Matmul dtype (<c>bnb_4bit_compute_dtype</c>); null = the input's.</summary>
    public ScalarType? ComputeDType { get; init; }

    /// <summary>4-bit block size.</summary>
    public int BlockSize { get; init; } = 64;

    /// <summary>LLM.int8 outlier threshold (<c>llm_int8_threshold</c>).</summary>
    public float Int8Threshold { get; init; } = 6.0f;

    /// <summary>Module names (last segment or full dotted name) kept in full precision, e.g. the output head.</summary>
    public IReadOnlyList<string> SkipModules { get; init; } = ["lm_head"];
}

/// <summary>LoRA settings (after peft's <c>LoraConfig</c>).</summary>
public sealed record LoraConfig
{
    /// <summary>Rank.</summary>
    public int R { get; init; } = 8;

    /// <summary>Alpha (scaling = alpha / r).</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Dropout on the adapter input.</summary>
    public double Dropout { get; init; }

    /// <summary>Modules to adapt: last name segments (q_proj, v_proj, ...) or regular expressions matched against the full dotted name.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = ["q_proj", "v_proj"];
}

/// <summary>
/// One-call model transformations: quantize every <c>nn.Linear</c> (Hugging Face's <c>load_in_4bit</c>/<c>load_in_8bit</c>),
/// wrap chosen linears with LoRA (peft's <c>get_peft_model</c>), and save/load adapters in peft's file format.
/// </summary>
public static class ModelSurgery
{
    /// <summary>peft's adapter weights file name.</summary>
    public const string AdapterFile = "adapter_model.safetensors";

    /// <summary>peft's adapter config file name.</summary>
    public const string AdapterConfigFile = "adapter_config.json";

    /// <summary>peft's key prefix of adapter weights: <c>{prefix}{module name}.lora_A.weight</c>.</summary>
    public const string AdapterKeyPrefix = "base_model.model.";

    /// <summary>Replaces every <c>nn.Linear</c> below <paramref name="root"/> (except skipped names) by its quantized counterpart, copying weights.</summary>
    /// <returns>The dotted names of the replaced layers.</returns>
    public static IReadOnlyList<string> QuantizeLinears(Module root, BitsAndBytesConfig config)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(config);
        var replaced = new List<string>();
        foreach (var (name, parent, childName, module) in ModuleSwap.Walk(root).ToList())
        {
            if (module is not Linear linear || Matches(name, config.SkipModules))
            {
                continue;
            }

            Module<Tensor, Tensor> q = config.LoadIn4Bit
                ? Linear4bit.FromLinear(linear, config.ComputeDType, config.UseDoubleQuant, config.QuantType, config.BlockSize)
                : Linear8bitLt.FromLinear(linear, hasFp16Weights: false, threshold: config.Int8Threshold);
            ModuleSwap.Replace(parent, childName, q);
            replaced.Add(name);
        }

        return replaced;
    }

    /// <summary>Wraps the linears named by <see cref="LoraConfig.TargetModules"/> with <see cref="LoraLinear"/>.</summary>
    /// <returns>The dotted names of the adapted layers.</returns>
    /// <exception cref="ArgumentException">No module matched the targets.</exception>
    public static IReadOnlyList<string> AddLora(Module root, LoraConfig config)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(config);
        var adapted = new List<string>();
        foreach (var (name, parent, childName, module) in ModuleSwap.Walk(root).ToList())
        {
            if (module is LoraLinear || module is not Module<Tensor, Tensor> layer || module is not (TorchSharp.Modules.Linear or ILinearLayer) ||
                !Matches(name, config.TargetModules) || adapted.Any(a => name.StartsWith(a + ".", StringComparison.Ordinal)))
            {
                continue;
            }

            ModuleSwap.Replace(parent, childName, new LoraLinear(layer, config.R, config.Alpha, config.Dropout));
            adapted.Add(name);
        }

        if (adapted.Count == 0)
        {
            throw new ArgumentException($"No linear layer matched the LoRA targets [{string.Join(", ", config.TargetModules)}].", nameof(config));
        }

        return adapted;
    }

    /// <summary>Every LoRA adapter below <paramref name="root"/>, by dotted name.</summary>
    public static IEnumerable<(string Name, LoraLinear Layer)> Adapters(Module root) =>
        ModuleSwap.Walk(root).Where(m => m.Module is LoraLinear).Select(m => (m.Name, (LoraLinear)m.Module));

    /// <summary>
    /// Writes the adapters as peft does: <c>adapter_model.safetensors</c> (keys <c>base_model.model.{name}.lora_A.weight</c>,
    /// <c>...lora_B.weight</c>) and <c>adapter_config.json</c>.
    /// </summary>
    public static void SaveAdapter(Module root, string directory, LoraConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        Directory.CreateDirectory(directory);
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (name, layer) in Adapters(root))
        {
            foreach (var (k, v) in layer.AdapterStateDict($"{AdapterKeyPrefix}{name}."))
            {
                tensors[k] = v;
            }
        }

        SafeTensorsFile.Save(Path.Combine(directory, AdapterFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(directory, AdapterConfigFile), AdapterConfigJson(config));
    }

    /// <summary>The <c>adapter_config.json</c> text peft writes for <paramref name="config"/>.</summary>
    public static string AdapterConfigJson(LoraConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["r"] = config.R,
            ["lora_alpha"] = config.Alpha,
            ["lora_dropout"] = config.Dropout,
            ["target_modules"] = config.TargetModules,
            ["bias"] = "none",
            ["inference_mode"] = false,
        }, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Loads peft-style adapter weights into the model's existing <see cref="LoraLinear"/> layers (all must be present).</summary>
    public static void LoadAdapter(Module root, string directory)
    {
        var path = Path.Combine(directory, AdapterFile);
        var tensors = SafeTensorsFile.Load(path);
        var used = new HashSet<string>();
        foreach (var (name, layer) in Adapters(root))
        {
            var prefix = $"{AdapterKeyPrefix}{name}.";
            layer.LoadAdapterStateDict(tensors, prefix);
            used.Add(prefix + "lora_A.weight");
            used.Add(prefix + "lora_B.weight");
        }

        var extra = tensors.Keys.FirstOrDefault(k => !used.Contains(k));
        if (extra is not null)
        {
            throw new StateDictException(extra, $"in {path} but the model has no such LoRA layer.");
        }
    }

    private static bool Matches(string name, IReadOnlyList<string> patterns)
    {
        var last = name[(name.LastIndexOf('.') + 1)..];
        return patterns.Any(p => p == last || p == name ||
            (p.IndexOfAny(['^', '$', '*', '(', '[', '\\', '|', '+', '?']) >= 0 && Regex.IsMatch(name, p, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1))));
    }
}
