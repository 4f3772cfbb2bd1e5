using System.Diagnostics;
using System.Text.Json.Nodes;
using BnbDist.Backends.Interop;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Training;
using BnbDist.Nn.Surgery;
using BnbDist.Optim8bit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Examples.QLoRA.Reference;

/// <summary>
/// Speed and memory of the reference configuration (<see cref="ReferenceOptions"/>) and its variants on one device. Each
/// variant builds its model without holding the whole model in full precision on the GPU (random bf16 init on the CPU,
/// then each decoder layer moved and, for 4-bit, quantized on its own), takes warm-up steps, then timed steps (each
/// synchronized and timed alone), and reports tokens/s, median step time and PyTorch's allocator peak.
/// </summary>
public sealed class ReferenceBenchmark(ReferenceOptions options, Device device, Action<string>? log = null)
{
    private readonly Action<string> say = log ?? Console.WriteLine;

    /// <summary>bf16 on CUDA, f32 on the CPU (where bf16 matmuls are slow).</summary>
    public ScalarType ComputeDType => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>Runs every variant; the document has <c>ref_tokens_per_s</c> and <c>ref_peak_gib</c> (first variant) at the top and each variant under <c>details</c>.</summary>
    public JsonObject Run()
    {
        var o = options;
        var details = new JsonObject();
        var doc = new JsonObject
        {
            ["device"] = DeviceName(),
            ["config"] = new JsonObject
            {
                ["model"] = $"Llama, hidden {o.Config.HiddenSize}, {o.Config.NumHiddenLayers} layers, {o.Config.NumAttentionHeads} heads, {o.Config.KeyValueHeads} KV heads, MLP {o.Config.IntermediateSize}, vocab {o.Config.VocabSize}, untied head, random weights",
                ["batch"] = o.Batch,
                ["seq_len"] = o.SequenceLength,
                ["tokens_per_step"] = o.Batch * o.SequenceLength,
                ["lora"] = $"r={o.LoraRank} alpha={o.LoraAlpha} dropout=0 on {string.Join("/", QLoraJob.LoraTargets)} (fp32 adapters)",
                ["compute_dtype"] = ComputeDType.ToString(),
                ["activation_checkpointing"] = o.GradientCheckpointing,
                ["loss"] = "chunked fused head + cross-entropy (fp32 per 512-row chunk, frozen head)",
                ["warmup_steps"] = o.WarmupSteps,
                ["timed_steps"] = o.TimedSteps,
                ["step"] = "forward, loss, backward, optimizer step, zero_grad (no grad clipping, constant lr)",
            },
            ["targets_h100"] = new JsonObject { ["tokens_per_s"] = 6500, ["peak_gib"] = 1.9 },
            ["python_reference_h100"] = new JsonObject
            {
                ["stack"] = "transformers + peft + bitsandbytes",
                ["qlora_tokens_per_s"] = 5370,
                ["qlora_peak_gib"] = 1.89,
                ["bf16_lora_tokens_per_s"] = 6373,
            },
            ["ref_tokens_per_s"] = null,
            ["ref_peak_gib"] = null,
            ["details"] = details,
        };

        foreach (var variant in o.Variants)
        {
            JsonObject result;
            try
            {
                result = RunVariant(variant);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                say($"[{Name(variant)}] FAILED: {ex.GetType().Name}: {ex.Message}");
                result = new JsonObject { ["error"] = $"{ex.GetType().Name}: {ex.Message}" };
            }
            finally
            {
                ReleaseDeviceMemory();
            }

            details[Name(variant)] = result;
            if (variant == o.Variants[0])
            {
                doc["ref_tokens_per_s"] = result["tokens_per_s"]?.DeepClone();
                doc["ref_peak_gib"] = result["peak_allocated_gib"]?.DeepClone();
            }
        }

        return doc;
    }

    /// <summary>JSON name of a variant.</summary>
    public static string Name(ReferenceVariant variant) => variant switch
    {
        ReferenceVariant.QLora => "qlora_nf4_paged_adamw8bit",
        ReferenceVariant.Bf16Lora => "bf16_lora_paged_adamw8bit",
        ReferenceVariant.QLoraAdamW32 => "qlora_nf4_adamw32bit",
        _ => throw new ArgumentOutOfRangeException(nameof(variant), variant, null),
    };

    /// <summary>Builds the model of <paramref name="variant"/> on the device, one decoder layer at a time; LoRA added and everything else frozen.</summary>
    public LlamaForCausalLM BuildModel(ReferenceVariant variant)
    {
        var o = options;
        manual_seed(o.Seed);
        var model = new LlamaForCausalLM(o.Config, CPU, ComputeDType);
        if (variant != ReferenceVariant.Bf16Lora)
        {
            ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig
            {
                QuantType = QuantType.NF4,
                UseDoubleQuant = true,
                ComputeDType = ComputeDType == ScalarType.Float32 ? null : ComputeDType,
                SkipModules = ["lm_head"],
            });
        }

        // One layer's full-precision weights at a time on the device: Linear4bit quantizes when it arrives.
        foreach (var layer in model.Model.Layers)
        {
            layer.to(device);
            if (variant != ReferenceVariant.Bf16Lora)
            {
                foreach (var q in layer.modules().OfType<BnbDist.Nn.Linear4bit>())
                {
                    q.Quantize();
                }
            }
        }

        model.to(device);
        foreach (var p in model.parameters())
        {
            p.requires_grad = false;
        }

        QLoraJob.AddAdapters(model, new LoraConfig { R = o.LoraRank, Alpha = o.LoraAlpha, TargetModules = [.. QLoraJob.LoraTargets] }, o.Seed + 1);
        model.Model.GradientCheckpointing = o.GradientCheckpointing;
        model.train();
        return model;
    }

    /// <summary>One training step: forward, loss, backward, optimizer step, zero_grad. Returns the loss (not synchronized).</summary>
    public static Tensor Step(LlamaForCausalLM model, OptimizerHelper optimizer, Tensor ids)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        using var scope = NewDisposeScope();
        var hidden = model.Model.call(ids);
        var loss = ChunkedLinearCrossEntropy.Loss(hidden, HeadWeight(model), ids);
        loss.backward();
        ActivationCheckpoint.ThrowIfBackwardFailed();
        optimizer.step();
        optimizer.zero_grad();
        return loss.detach().MoveToOuterDisposeScope();
    }

    /// <summary>The output head's weight (the embedding when tied).</summary>
    public static Tensor HeadWeight(LlamaForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.LmHead is Linear head ? head.weight! : model.Model.EmbedTokens.weight!;
    }

    private JsonObject RunVariant(ReferenceVariant variant)
    {
        var o = options;
        var name = Name(variant);
        var build = Stopwatch.StartNew();
        say($"[{name}] building the model on {device} ...");
        using var model = BuildModel(variant);
        var trainable = model.parameters().Where(p => p.requires_grad).ToList();
        OptimizerHelper optimizer = variant == ReferenceVariant.QLoraAdamW32
            ? new AdamW32bit(trainable, lr: 2e-4, weightDecay: 0.0)
            : new PagedAdamW8bit(trainable, lr: 2e-4, weightDecay: 0.0);
        using var optimizerScope = optimizer;
        manual_seed(o.Seed + 2);
        using var ids = randint(0, o.Config.VocabSize, [o.Batch, o.SequenceLength], dtype: ScalarType.Int64).to(device);
        ReleaseDeviceMemory();
        var modelStats = Memory();
        ResetPeak();
        say($"[{name}] built in {build.Elapsed.TotalSeconds:F1} s: {trainable.Sum(p => p.numel()):N0} trainable parameters; {Gib(modelStats?.AllocatedBytes)} GiB allocated");

        var times = new List<double>();
        var losses = new List<Tensor>();
        var clock = Stopwatch.StartNew();
        var total = o.WarmupSteps + o.TimedSteps;
        var stoppedEarly = false;
        for (var i = 0; i < total; i++)
        {
            Synchronize();
            var t0 = Stopwatch.GetTimestamp();
            losses.Add(Step(model, optimizer, ids));
            Synchronize();
            var ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            var warm = i < o.WarmupSteps;
            if (!warm)
            {
                times.Add(ms);
            }

            say($"[{name}] {(warm ? "warm-up" : "step")} {(warm ? i + 1 : i + 1 - o.WarmupSteps)}/{(warm ? o.WarmupSteps : o.TimedSteps)}: {ms:F1} ms ({o.Batch * o.SequenceLength / ms * 1000:F0} tok/s)");
            if (clock.Elapsed.TotalSeconds > o.MaxSecondsPerVariant && i + 1 < total && times.Count > 0)
            {
                say($"[{name}] stopping after {times.Count} timed steps: over {o.MaxSecondsPerVariant} s");
                stoppedEarly = true;
                break;
            }
        }

        var stats = Memory();
        var lossValues = losses.Select(l => (double)l.to_type(ScalarType.Float32).item<float>()).ToList();
        losses.ForEach(l => l.Dispose());
        var sorted = times.Order().ToList();
        var median = sorted.Count == 0 ? double.NaN : sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
        var tokensPerSecond = times.Count == 0 ? double.NaN : o.Batch * o.SequenceLength * times.Count / (times.Sum() / 1000);
        var result = new JsonObject
        {
            ["tokens_per_s"] = Round(tokensPerSecond, 1),
            ["median_step_ms"] = Round(median, 2),
            ["min_step_ms"] = Round(sorted.FirstOrDefault(double.NaN), 2),
            ["max_step_ms"] = Round(sorted.LastOrDefault(double.NaN), 2),
            ["timed_steps"] = times.Count,
            ["stopped_early"] = stoppedEarly,
            ["peak_allocated_gib"] = stats is null ? null : Round(stats.Value.PeakAllocatedBytes / (double)(1L << 30), 3),
            ["peak_reserved_gib"] = stats is null ? null : Round(stats.Value.PeakReservedBytes / (double)(1L << 30), 3),
            ["model_allocated_gib"] = modelStats is null ? null : Round(modelStats.Value.AllocatedBytes / (double)(1L << 30), 3),
            ["device_used_gib"] = DeviceUsedGib(),
            ["memory_stats"] = stats is null ? MemoryUnavailableReason() : "PyTorch caching allocator (libbnbdist_torch_memory.so); peaks reset after the model was built, so they cover the steps",
            ["trainable_parameters"] = trainable.Sum(p => p.numel()),
            ["optimizer"] = optimizer.GetType().Name,
            ["build_s"] = Round(build.Elapsed.TotalSeconds - clock.Elapsed.TotalSeconds, 1),
            ["first_loss"] = Round(lossValues.FirstOrDefault(double.NaN), 4),
            ["last_loss"] = Round(lossValues.LastOrDefault(double.NaN), 4),
            ["losses_finite"] = lossValues.All(double.IsFinite),
        };
        say($"[{name}] {result["tokens_per_s"]} tok/s, median {result["median_step_ms"]} ms, peak allocated {result["peak_allocated_gib"]?.ToString() ?? "n/a"} GiB, device used {result["device_used_gib"]?.ToString() ?? "n/a"} GiB, loss {result["first_loss"]} -> {result["last_loss"]}");
        return result;
    }

    private void Synchronize()
    {
        if (device.type == DeviceType.CUDA)
        {
            cuda.synchronize(device);
        }
    }

    private TorchCudaMemoryStats? Memory() =>
        device.type == DeviceType.CUDA && TorchCudaMemory.TryGetStats(Math.Max(0, device.index), out var s, out _) ? s : null;

    private void ResetPeak()
    {
        if (device.type == DeviceType.CUDA && !TorchCudaMemory.TryResetPeakStats(Math.Max(0, device.index), out var reason))
        {
            say($"peak memory unavailable: {reason}");
        }
    }

    private string MemoryUnavailableReason() => device.type != DeviceType.CUDA
        ? "CPU run: no allocator statistics"
        : TorchCudaMemory.UnavailableReason ?? "the allocator statistics call failed";

    private double? DeviceUsedGib()
    {
        if (device.type != DeviceType.CUDA)
        {
            return null;
        }

        var (free, total) = CudaRuntime.MemoryInfo();
        return Round((total - free) / (double)(1L << 30), 3);
    }

    /// <summary>Frees what the last variant left: collect its tensors, then return the allocator's cache to CUDA.</summary>
    private void ReleaseDeviceMemory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        if (device.type == DeviceType.CUDA)
        {
            Synchronize();
            TorchCudaMemory.TryEmptyCache(out _);
        }
    }

    private string DeviceName()
    {
        if (device.type != DeviceType.CUDA)
        {
            return $"CPU ({Environment.ProcessorCount} threads)";
        }

        var idx = Math.Max(0, device.index);
        var (major, minor) = CudaRuntime.ComputeCapability(idx);
        return $"{CudaRuntime.DeviceName(idx)} (sm_{major}{minor})";
    }

    private static string Gib(long? bytes) => bytes is null ? "n/a" : $"{bytes.Value / (double)(1L << 30):F3}";

    private static double? Round(double value, int digits) => double.IsFinite(value) ? Math.Round(value, digits) : null;
}
