using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using BnbDist.Backends.Interop;
using BnbDist.Collectives;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Training;
using BnbDist.Nn.Surgery;
using BnbDist.Optim8bit;
using BnbDist.Optim8bit.Config;
using BnbDist.Sharding;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>Settings of one <see cref="ShardingBench"/> run (one variant on every rank of one bnbrun group).</summary>
/// <param name="Variant">nf4 (NF4 + double-quant frozen base) or bf16 (the same linears frozen in the compute dtype, no quantization).</param>
/// <param name="Preset">tinyllama (1.1B: hidden 2048, 22 layers, 32/4 heads, MLP 5632, vocab 32000) or tiny (a CPU-test shape).</param>
/// <param name="Batch">Sequences per rank per step (the same on 1 and 2 GPUs).</param>
/// <param name="SequenceLength">Tokens per sequence.</param>
/// <param name="Warmup">Untimed steps first.</param>
/// <param name="Steps">Timed steps (the median is reported).</param>
/// <param name="LoraRank">LoRA rank on every projection (alpha = 2 x rank).</param>
/// <param name="Device">cuda (the GPU LOCAL_RANK) or cpu.</param>
/// <param name="OutPath">The JSON rank 0 writes.</param>
/// <param name="Prefetch">FullyShardOptions.Prefetch (off: to measure what overlapping the next block's all-gather buys).</param>
/// <param name="Seed">Weights, adapters and tokens (every rank builds the same model).</param>
internal sealed record ShardingBenchOptions(string Variant, string Preset, int Batch, int SequenceLength, int Warmup, int Steps,
    int LoraRank, string Device, string OutPath, bool Prefetch = true, long Seed = 1234);

/// <summary>
/// Sharded QLoRA training-step benchmark, one process per GPU under bnbrun: a Llama-like model with random weights,
/// LoRA r=16 on every attention and MLP projection, FullyShard per decoder layer and the root, PagedAdamW8bit over the
/// master shards (ShardedOptimizer), random tokens. The model is built on the CPU in the compute dtype and moved to the
/// GPU one decoder layer at a time, each layer quantized and sharded before the next moves, so no GPU ever holds the
/// whole model. Rank 0 writes the median step time, tokens/s, per-rank bytes of weights and optimizer state, peak
/// device memory (cudaMemGetInfo, max over ranks) and the bytes all-gathered per step.
/// </summary>
internal static class ShardingBench
{
    private static readonly string[] LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public static int Run(ShardingBenchOptions o) => DistributedEnvironment.RunWorker(env =>
    {
        if (o.Variant is not ("nf4" or "bf16"))
        {
            throw new ArgumentException($"--variant must be nf4 or bf16; got {o.Variant}.", nameof(o));
        }

        var device = o.Device == "cuda" ? new Device(DeviceType.CUDA, env.LocalRank) : CPU;
        if (device.type == DeviceType.CUDA)
        {
            CudaRuntime.SetDevice(env.LocalRank);
        }

        var (store, comm) = env.InitProcessGroup(TimeSpan.FromMinutes(5));
        using (store)
        using (comm)
        {
            var usedAtStart = DeviceUsed(device);
            var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
            var config = Config(o.Preset);
            var clock = Stopwatch.StartNew();
            var (model, root) = Build(o, config, dtype, device, comm);
            var buildSeconds = clock.Elapsed.TotalSeconds;
            var usedAfterBuild = DeviceUsed(device);
            ShardedOptimizer.ConfigureStateBits(root, GlobalOptimManager.Instance);
            using var optimizer = new PagedAdamW8bit(root.Parameters(), lr: 1e-4, weightDecay: 0.0);
            ShardedOptimizer.VerifySameConfig(root, optimizer);

            var times = new List<double>();
            var gathered = new List<long>();
            double lastLoss = double.NaN;
            var peak = usedAfterBuild;
            model.train();
            for (var step = 0; step < o.Warmup + o.Steps; step++)
            {
                using var scope = NewDisposeScope();
                var ids = Tokens(o, config, comm.Rank, step, device);
                Sync(device);
                var before = root.GatheredBytesTotal;
                var sw = Stopwatch.StartNew();
                var loss = CausalLm.Loss(model.call(ids), ids);
                root.Backward(loss);
                root.ClipGradNorm(1.0);
                optimizer.step();
                optimizer.zero_grad();
                lastLoss = loss.to_type(ScalarType.Float64).item<double>();
                Sync(device);
                var ms = sw.Elapsed.TotalMilliseconds;
                peak = Math.Max(peak, DeviceUsed(device));
                if (step >= o.Warmup)
                {
                    times.Add(ms);
                    gathered.Add(root.GatheredBytesTotal - before);
                }

                if (comm.Rank == 0)
                {
                    Console.WriteLine($"{o.Variant} world {comm.WorldSize} step {step + 1}/{o.Warmup + o.Steps}{(step < o.Warmup ? " (warm-up)" : string.Empty)}: {ms:F1} ms loss {lastLoss:F4}");
                }
            }

            times.Sort();
            var medianMs = Timing.Median([.. times]);
            var stateBytes = root.Parameters().Sum(p => optimizer.StateOf(p).StateTensors().Values.Sum(t => t.numel() * t.element_size()));
            var weightBytes = root.LocalBytes;
            var (weightBytesMax, stateBytesMax, peakMax) = (MaxOverRanks(comm, weightBytes, device), MaxOverRanks(comm, stateBytes, device), MaxOverRanks(comm, peak, device));
            var medianGathered = gathered.Order().ElementAt(gathered.Count / 2);
            if (comm.Rank == 0)
            {
                var tokensPerStep = (long)o.Batch * o.SequenceLength * comm.WorldSize;
                var (layerParams, rootParams) = ParamCounts(model);
                var w = comm.WorldSize;
                // FSDP2 in bf16 (2 bytes a parameter on the wire, reshard_after_forward on the layers): each rank
                // receives (w-1)/w of every layer twice (forward, and again before backward) and of the root once.
                var bf16Fsdp = (long)(2.0 * ((2 * layerParams) + rootParams) * (w - 1) / w);
                var doc = new JsonObject
                {
                    ["variant"] = o.Variant,
                    ["base"] = o.Variant == "nf4"
                        ? "NF4 blocksize 64 with double quant (frozen), bf16 compute; lm_head, embeddings and norms frozen in the compute dtype"
                        : "every weight frozen in the compute dtype (no quantization)",
                    ["trainable"] = $"LoRA r={o.LoraRank} alpha={2 * o.LoraRank} on q/k/v/o/gate/up/down (f32 adapters)",
                    ["optimizer"] = "PagedAdamW8bit (states in pinned host memory, staged to the GPU per page) via ShardedOptimizer",
                    ["sharding"] = "FullyShard per decoder layer + root, reshard_after_forward" + (o.Prefetch ? ", prefetch" : ", no prefetch"),
                    ["prefetch"] = o.Prefetch,
                    ["world_size"] = w,
                    ["backend"] = comm.Backend,
                    ["device"] = device.type == DeviceType.CUDA ? CudaRuntime.DeviceName(env.LocalRank) : "cpu",
                    ["compute_dtype"] = dtype.ToString(),
                    ["preset"] = o.Preset,
                    ["config"] = JsonSerializer.SerializeToNode(config),
                    ["params_total"] = layerParams + rootParams,
                    ["params_trainable"] = root.FullElementCounts().Values.Sum(),
                    ["batch_per_rank"] = o.Batch,
                    ["seq_len"] = o.SequenceLength,
                    ["warmup_steps"] = o.Warmup,
                    ["timed_steps"] = o.Steps,
                    ["step_ms_median"] = Math.Round(medianMs, 3),
                    ["step_ms_all"] = new JsonArray([.. times.Select(t => (JsonNode)Math.Round(t, 3))]),
                    ["tokens_per_second"] = Math.Round(tokensPerStep / (medianMs / 1000), 1),
                    ["last_loss"] = lastLoss,
                    ["weight_bytes_per_rank"] = weightBytesMax,
                    ["optimizer_state_bytes_per_rank"] = stateBytesMax,
                    ["weight_and_state_bytes_per_rank"] = weightBytesMax + stateBytesMax,
                    ["full_weight_bytes"] = root.FullBytes,
                    ["peak_device_used_bytes"] = peakMax,
                    ["device_used_at_start_bytes"] = usedAtStart,
                    ["device_used_after_build_bytes"] = usedAfterBuild,
                    ["gathered_bytes_per_step"] = medianGathered,
                    ["bf16_fsdp_gathered_bytes_per_step"] = bf16Fsdp,
                    ["build_seconds"] = Math.Round(buildSeconds, 1),
                    ["notes"] = "peak_device_used = cudaMemGetInfo total-free after each step (caching allocator reserve, CUDA context and NCCL buffers included; max over ranks); "
                        + "weight bytes = this rank's shards as stored (float shards are f32); bf16_fsdp_gathered = 2 B/param x (2 x layer params + root params) x (w-1)/w.",
                };
                Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(o.OutPath))!);
                File.WriteAllText(o.OutPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
                Console.WriteLine($"{o.Variant} world {w}: median step {medianMs:F1} ms, {tokensPerStep / (medianMs / 1000):F0} tok/s, weights+states/rank {(weightBytesMax + stateBytesMax) / 1e6:F1} MB, peak {peakMax / 1e6:F0} MB, gathered/step {medianGathered / 1e6:F1} MB (bf16 FSDP {bf16Fsdp / 1e6:F1} MB); wrote {o.OutPath}");
            }

            comm.Barrier();
        }

        return 0;
    });

    /// <summary>The model shapes: TinyLlama-1.1B's, and a tiny one for CPU tests (sizes not multiples of the atoms, so shards pad).</summary>
    public static LlamaConfig Config(string preset) => preset switch
    {
        "tinyllama" => LlamaConfig.TinyLlama1B,
        "tiny" => new LlamaConfig
        {
            VocabSize = 300,
            HiddenSize = 64,
            IntermediateSize = 176,
            NumHiddenLayers = 2,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            MaxPositionEmbeddings = 128,
        },
        _ => throw new ArgumentException($"--preset must be tinyllama or tiny; got {preset}.", nameof(preset)),
    };

    /// <summary>
    /// Random weights on the CPU in the compute dtype (seeded: every rank builds the same model), NF4 linears for the
    /// nf4 variant, LoRA adapters; then each decoder layer moves to the device and is sharded (an NF4 layer quantizes
    /// there) before the next, and the root (embeddings, norm, head) last.
    /// </summary>
    private static (LlamaForCausalLM Model, FsdpModule Root) Build(ShardingBenchOptions o, LlamaConfig config, ScalarType dtype, Device device, ICommunicator comm)
    {
        manual_seed(o.Seed);
        var model = new LlamaForCausalLM(config, CPU, dtype);
        if (o.Variant == "nf4")
        {
            ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig
            {
                QuantType = QuantType.NF4,
                UseDoubleQuant = true,
                ComputeDType = dtype,
                SkipModules = ["lm_head"],
            });
        }

        manual_seed(o.Seed + 1);
        ModelSurgery.AddLora(model, new LoraConfig { R = o.LoraRank, Alpha = 2 * o.LoraRank, TargetModules = [.. LoraTargets] });
        foreach (var (name, p) in model.named_parameters())
        {
            p.requires_grad = name.Contains(".lora_", StringComparison.Ordinal);
        }

        var options = new FullyShardOptions { Prefetch = o.Prefetch };
        foreach (var layer in model.Model.Layers)
        {
            layer.to(device);
            FullyShard.Apply(layer, comm, options);
        }

        foreach (var (name, child) in model.Model.named_children())
        {
            if (name != "layers")
            {
                child.to(device);
            }
        }

        model.LmHead?.to(device);
        GC.Collect(); // the CPU copies of the moved weights are unreachable now; free them before training
        return (model, FullyShard.Apply(model, comm, options));
    }

    private static (long Layers, long Root) ParamCounts(LlamaForCausalLM model)
    {
        // Whole-tensor element counts of the base model (4-bit weights count 2 elements a byte), LoRA excluded.
        var c = model.Config;
        var kv = (long)c.NumKeyValueHeads!.Value * (c.HiddenSize / c.NumAttentionHeads);
        var h = (long)c.HiddenSize;
        var perLayer = (2 * h * h) + (2 * h * kv) + (3 * h * c.IntermediateSize) + (2 * h);
        var rootParams = (c.VocabSize * h * (c.TieWordEmbeddings ? 1 : 2)) + h;
        return (perLayer * c.NumHiddenLayers, rootParams);
    }

    private static Tensor Tokens(ShardingBenchOptions o, LlamaConfig config, int rank, int step, Device device)
    {
        var g = new Generator((ulong)(o.Seed + (1000 * rank) + step));
        return randint(config.VocabSize, [o.Batch, o.SequenceLength], ScalarType.Int64, generator: g).to(device);
    }

    private static long DeviceUsed(Device device)
    {
        if (device.type != DeviceType.CUDA)
        {
            return 0;
        }

        var (free, total) = CudaRuntime.MemoryInfo();
        return (long)(total - free);
    }

    private static long MaxOverRanks(ICommunicator comm, long value, Device device)
    {
        using var t = tensor(new[] { (double)value }, ScalarType.Float64).to(device);
        comm.AllReduce(t, ReduceOp.Max);
        return (long)t.cpu().item<double>();
    }

    private static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA)
        {
            cuda.synchronize(device);
        }
    }
}
