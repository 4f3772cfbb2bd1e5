using System.CommandLine;
using System.Text.Json;
using BnbDist.Backends.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Examples.QLoRA.Reference;

/// <summary>The <c>reference</c> subcommand: runs <see cref="ReferenceBenchmark"/> and writes its JSON.</summary>
public static class ReferenceCommand
{
    private static readonly Dictionary<string, ReferenceVariant> VariantNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["qlora"] = ReferenceVariant.QLora,
        ["bf16-lora"] = ReferenceVariant.Bf16Lora,
        ["qlora-adamw32"] = ReferenceVariant.QLoraAdamW32,
    };

    /// <summary>The command with its flags.</summary>
    public static Command Create()
    {
        var d = new ReferenceOptions();
        var output = new Option<string>("--out") { Description = "Results JSON.", DefaultValueFactory = _ => "qlora-ref.json" };
        var device = new Option<string?>("--device") { Description = "cuda (default when available, GPU 0) or cpu." };
        var steps = new Option<int>("--steps") { Description = "Timed steps per variant.", DefaultValueFactory = _ => d.TimedSteps };
        var warmup = new Option<int>("--warmup") { Description = "Untimed warm-up steps per variant.", DefaultValueFactory = _ => d.WarmupSteps };
        var shape = new Option<string>("--shape") { Description = "tinyllama-1.1b (the reference) or tiny (hidden 64, for CPU tests).", DefaultValueFactory = _ => "tinyllama-1.1b" };
        var layers = new Option<int?>("--layers") { Description = "Decoder layers (default: the shape's; fewer for a smoke run)." };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => d.Batch };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => d.SequenceLength };
        var variants = new Option<string>("--variants") { Description = "Comma-separated: qlora (the reference, first), bf16-lora, qlora-adamw32.", DefaultValueFactory = _ => "qlora,bf16-lora,qlora-adamw32" };
        var noCheckpoint = new Option<bool>("--no-checkpointing") { Description = "Keep all activations (no activation checkpointing)." };
        var maxSeconds = new Option<double>("--max-seconds") { Description = "Stop a variant's timed steps after this long.", DefaultValueFactory = _ => d.MaxSecondsPerVariant };
        var command = new Command("reference", "Speed and memory of the fixed 1.1B QLoRA reference (TinyLlama shape, random weights) and its bf16-LoRA and fp32-AdamW variants on one device.")
        {
            output, device, steps, warmup, shape, layers, batch, seqLen, variants, noCheckpoint, maxSeconds,
        };
        command.SetAction(parse =>
        {
            TorchRuntime.PreloadFromEnvironment();
            var chosen = new List<ReferenceVariant>();
            foreach (var v in parse.GetValue(variants)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!VariantNames.TryGetValue(v, out var variant))
                {
                    Console.Error.WriteLine($"qlora reference: unknown variant '{v}' in --variants; use {string.Join(", ", VariantNames.Keys)}.");
                    return 2;
                }

                chosen.Add(variant);
            }

            var config = parse.GetValue(shape) switch
            {
                "tinyllama-1.1b" => ReferenceOptions.TinyLlamaShape,
                "tiny" => ReferenceOptions.TinyTestShape,
                _ => null,
            };
            if (config is null)
            {
                Console.Error.WriteLine($"qlora reference: unknown --shape '{parse.GetValue(shape)}'; use tinyllama-1.1b or tiny.");
                return 2;
            }

            var options = d with
            {
                Config = config with { NumHiddenLayers = parse.GetValue(layers) ?? config.NumHiddenLayers },
                TimedSteps = parse.GetValue(steps),
                WarmupSteps = parse.GetValue(warmup),
                Batch = parse.GetValue(batch),
                SequenceLength = parse.GetValue(seqLen),
                Variants = chosen,
                GradientCheckpointing = !parse.GetValue(noCheckpoint),
                MaxSecondsPerVariant = parse.GetValue(maxSeconds),
            };
            if (options.TimedSteps < 1 || options.WarmupSteps < 0 || options.Batch < 1 || options.SequenceLength < 2 || chosen.Count == 0)
            {
                Console.Error.WriteLine("qlora reference: --steps ≥ 1, --warmup ≥ 0, --batch ≥ 1, --seq-len ≥ 2 and at least one variant are required.");
                return 2;
            }

            var dev = parse.GetValue(device) is { } name ? new Device(name) : cuda.is_available() ? new Device(DeviceType.CUDA, 0) : CPU;
            var doc = new ReferenceBenchmark(options, dev).Run();
            doc["command"] = $"qlora reference {string.Join(' ', parse.Tokens.Select(t => t.Value))}";
            var path = parse.GetValue(output)!;
            if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir)
            {
                Directory.CreateDirectory(dir);
            }

            File.WriteAllText(path, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {path}: ref_tokens_per_s {doc["ref_tokens_per_s"]?.ToString() ?? "n/a"}, ref_peak_gib {doc["ref_peak_gib"]?.ToString() ?? "n/a"}");
            return doc["ref_tokens_per_s"] is null ? 1 : 0;
        });
        return command;
    }
}
