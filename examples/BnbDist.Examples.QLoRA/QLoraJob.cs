using System.Diagnostics;
using BnbDist.Collectives;
using BnbDist.Examples.Llama;
using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Data;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Tokenization;
using BnbDist.Examples.Llama.Training;
using BnbDist.Nn.Surgery;
using BnbDist.Optim8bit;
using BnbDist.Optim8bit.Config;
using BnbDist.Sharding;
using BnbDist.Sharding.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Examples.QLoRA;

/// <summary>A setting or input that makes the run impossible, found before any training starts.</summary>
public sealed class QLoraSetupException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The main job, on every rank: load the base model and tokenizer, quantize it to NF4 with double quantization,
/// add LoRA to every attention and MLP projection, shard it (FullyShard per decoder layer and the root), fine-tune with
/// PagedAdamW8bit on this rank's share of the corpus, checkpoint every K steps, and report.
/// </summary>
public sealed class QLoraJob(QLoraOptions options, ICommunicator comm)
{
    /// <summary>The LoRA targets: every attention and MLP projection of a Llama layer.</summary>
    public static readonly IReadOnlyList<string> LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    private readonly bool leader = comm.Rank == 0;

    private Device Device { get; } = LocalDevice();

    private ScalarType ComputeDType => ComputeDTypeFor(Device);

    /// <summary>This rank's device: the GPU of its LOCAL_RANK where CUDA is available, else the CPU.</summary>
    public static Device LocalDevice() =>
        cuda.is_available() ? new Device(DeviceType.CUDA, DistributedEnvironment.FromEnvironment().LocalRank) : CPU;

    /// <summary>bf16 compute on GPUs, f32 on the CPU.</summary>
    public static ScalarType ComputeDTypeFor(Device device) => device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>Mean next-token loss over every rank's share of the held-out sequences (one all-reduce of the sums).</summary>
    public static double HeldOutLoss(LlamaForCausalLM model, PackedDataset heldOut, int batchSize, Device device, ICommunicator comm)
    {
        ArgumentNullException.ThrowIfNull(comm);
        var sum = Perplexity.Evaluate(model, heldOut, batchSize, device);
        using var t = tensor(new[] { sum.NllSum, sum.Predictions }, ScalarType.Float64).to(device);
        comm.AllReduce(t, ReduceOp.Sum);
        var v = t.cpu().data<double>().ToArray();
        return v[0] / v[1];
    }

    /// <summary>Runs the job; returns the summary on every rank.</summary>
    public RunSummary Run()
    {
        var (model, tokenizer, config, train, heldOut) = Prepare(options, comm.Rank, comm.WorldSize, Device, ComputeDType);
        Directory.CreateDirectory(options.OutputDirectory);
        var lora = new LoraConfig { R = options.LoraRank, Alpha = options.LoraAlpha, TargetModules = [.. LoraTargets] };
        AddAdapters(model, lora, options.Seed);
        var trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());

        foreach (var layer in model.Model.Layers)
        {
            FullyShard.Apply(layer, comm);
        }

        var root = FullyShard.Apply(model, comm);
        ShardedOptimizer.ConfigureStateBits(root, GlobalOptimManager.Instance);
        using var optimizer = new PagedAdamW8bit(root.Parameters(), lr: options.LearningRate, weightDecay: 0.0);
        ShardedOptimizer.VerifySameConfig(root, optimizer);
        var schedule = new CosineSchedule(options.LearningRate, options.WarmupSteps, options.Steps);
        using var checkpointer = new ShardedCheckpointer(Path.Combine(options.OutputDirectory, "checkpoints"), comm,
            new CheckpointSaveOptions { KeepLast = options.KeepCheckpoints, Overwrite = true, ConfigFingerprint = optimizer.ConfigFingerprint().HashHex });

        var start = options.Resume ? Restore(checkpointer, root, optimizer) : 0;
        var report = new RunReport(options.OutputDirectory, resume: start > 0);
        Say(start > 0 ? $"resumed from step {start}" : "starting from the base model");

        var before = Evaluate(model, heldOut);
        var sampleBefore = Sample(model, tokenizer, config);
        Say($"held-out loss before: {before:F4} (perplexity {Math.Exp(before):F2}); sample: {sampleBefore}");

        var (steps, lastCheckpoint, tokensPerSecond) = Train(model, root, optimizer, schedule, checkpointer, train, start, report);

        var after = Evaluate(model, heldOut);
        var sampleAfter = Sample(model, tokenizer, config);
        var adapter = Path.Combine(options.OutputDirectory, "adapter");
        root.Unshard();
        if (leader)
        {
            ModelSurgery.SaveAdapter(model, adapter, lora);
        }

        root.Reshard();
        comm.Barrier();
        var summary = new RunSummary(comm.WorldSize, Device.ToString(), start, steps, before, Math.Exp(before), after, Math.Exp(after),
            report.Steps.Count > 0 ? report.Steps[^1].Loss : double.NaN, tokensPerSecond, sampleBefore, sampleAfter, lastCheckpoint, adapter,
            trainable, root.LocalBytes, root.FullBytes);
        if (leader)
        {
            report.WriteSummary(summary);
            if (report.Steps.Count > 0 && report.PlotLoss() is { } png)
            {
                Say($"loss curve: {png}");
            }
        }

        return summary;
    }

    /// <summary>
    /// Loads and checks everything the run needs before any training: model, tokenizer, corpus, sequence length. Each
    /// problem is a <see cref="QLoraSetupException"/> that says what to do.
    /// </summary>
    public static (LlamaForCausalLM Model, BpeTokenizer Tokenizer, LlamaConfig Config, PackedDataset Train, PackedDataset HeldOut) Prepare(
        QLoraOptions options, int rank, int worldSize, Device device, ScalarType computeDType)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!LlamaCheckpoint.Exists(options.ModelDirectory))
        {
            throw new QLoraSetupException($"no model in {options.ModelDirectory} (config.json, tokenizer.json and model weights expected); create the example's base model with `{DataCache.PretrainCommand}` or pass --model.");
        }

        PretrainedLlama loaded;
        try
        {
            loaded = LlamaCheckpoint.Load(options.ModelDirectory, device);
        }
        catch (Exception ex) when (ex is not QLoraSetupException)
        {
            throw new QLoraSetupException($"cannot load the model in {options.ModelDirectory}: {ex.Message}", ex);
        }

        if (options.SequenceLength > loaded.Config.MaxPositionEmbeddings)
        {
            throw new QLoraSetupException($"--seq-len {options.SequenceLength} exceeds the model's context (max_position_embeddings = {loaded.Config.MaxPositionEmbeddings}).");
        }

        var documents = LoadCorpus(options.CorpusFile);
        var packed = PackedDataset.FromDocuments(documents, loaded.Tokenizer, options.SequenceLength).Shuffled(options.Seed);
        var heldOutCount = Math.Max(options.EvalSequences, (int)(packed.Count * options.HeldOutFraction));
        var (trainAll, heldOutAll) = packed.SplitHeldOut((double)heldOutCount / packed.Count);
        if (options.EvalSequences % worldSize != 0 || heldOutAll.Count < options.EvalSequences)
        {
            throw new QLoraSetupException($"--eval-sequences {options.EvalSequences} must be a multiple of the world size ({worldSize}) and at most the held-out part of the corpus ({heldOutAll.Count} sequences).");
        }

        var train = trainAll.Shard(rank, worldSize);
        if (train.Count < options.MicroBatch)
        {
            throw new QLoraSetupException($"the corpus gives each of {worldSize} ranks {train.Count} training sequences of {options.SequenceLength} tokens, fewer than one micro-batch of {options.MicroBatch}.");
        }

        ModelSurgery.QuantizeLinears(loaded.Model, new BitsAndBytesConfig
        {
            QuantType = QuantType.NF4,
            UseDoubleQuant = true,
            ComputeDType = computeDType == ScalarType.Float32 ? null : computeDType,
            SkipModules = ["lm_head"],
        });
        return (loaded.Model, loaded.Tokenizer, loaded.Config, train, heldOutAll.Take(options.EvalSequences).Shard(rank, worldSize));
    }

    /// <summary>Adds LoRA (peft init, seeded so every rank starts equal) and freezes everything else.</summary>
    public static void AddAdapters(LlamaForCausalLM model, LoraConfig lora, long seed)
    {
        ArgumentNullException.ThrowIfNull(model);
        manual_seed(seed);
        ModelSurgery.AddLora(model, lora);
        foreach (var (name, p) in model.named_parameters())
        {
            p.requires_grad = name.Contains(".lora_", StringComparison.Ordinal);
        }
    }

    /// <summary>The corpus: a plain-text file (paragraphs as documents), or Jane Austen's novels from the data cache.</summary>
    public static IReadOnlyList<TextDocument> LoadCorpus(string? file)
    {
        if (file is null)
        {
            return JaneAustenCorpus.Load();
        }

        if (!File.Exists(file))
        {
            throw new CorpusNotFoundException("corpus", file);
        }

        var text = File.ReadAllText(file);
        var paragraphs = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return paragraphs.Length == 0 ? throw new EmptyCorpusException("corpus", file) : [.. paragraphs.Select((p, i) => new TextDocument($"{Path.GetFileName(file)}#{i}", p))];
    }

    private (int Steps, string? Checkpoint, double TokensPerSecond) Train(LlamaForCausalLM model, FsdpModule root, Optimizer8bit optimizer,
        CosineSchedule schedule, ShardedCheckpointer checkpointer, PackedDataset train, int start, RunReport report)
    {
        var clock = Stopwatch.StartNew();
        var batches = train.Count / options.MicroBatch;
        long tokens = 0;
        string? lastCheckpoint = null;
        var end = options.StopAfter > 0 ? Math.Min(options.Steps, start + options.StopAfter) : options.Steps;
        using var progress = leader ? new TrainingProgress(start, end) : null;
        model.train();
        for (var step = start; step < end; step++)
        {
            using var scope = NewDisposeScope();
            var lr = schedule.Apply(optimizer, step);
            var loss = zeros(1, ScalarType.Float64, Device);
            for (var m = 0; m < options.GradientAccumulation; m++)
            {
                var index = ((step * options.GradientAccumulation) + m) % batches;
                var batch = train.Batch(index * options.MicroBatch, options.MicroBatch, Device);
                var l = CausalLm.Loss(model.call(batch), batch);
                (l / options.GradientAccumulation).backward();
                loss.add_(l.detach().to_type(ScalarType.Float64) / options.GradientAccumulation);
                tokens += batch.numel() * comm.WorldSize;
            }

            root.SyncGradients();
            var norm = root.ClipGradNorm(options.MaxGradNorm);
            optimizer.step();
            optimizer.zero_grad();
            comm.AllReduce(loss, ReduceOp.Avg);
            var elapsed = clock.Elapsed.TotalSeconds;
            var metrics = new StepMetrics(step, loss.item<double>(), lr, norm, tokens, tokens / elapsed, elapsed, Environment.WorkingSet);
            if (progress is not null)
            {
                report.Add(metrics);
                var eta = TimeSpan.FromSeconds(elapsed / (step - start + 1) * (end - step - 1));
                progress.Report(metrics, eta, Device.type == DeviceType.CUDA ? GpuMemory() : $" rss {metrics.PeakRssBytes / (1 << 20)} MiB");
            }

            if ((options.CheckpointEvery > 0 && (step + 1) % options.CheckpointEvery == 0) || step + 1 == end)
            {
                lastCheckpoint = Save(checkpointer, root, optimizer, step + 1);
            }
        }

        return (end, lastCheckpoint, tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds));
    }

    private string Save(ShardedCheckpointer checkpointer, FsdpModule root, Optimizer8bit optimizer, int step)
    {
        var (optimSharded, optimReplicated) = ShardedOptimizer.State(root, optimizer);
        var replicated = root.ReplicatedState().Concat(optimReplicated).ToDictionary(kv => kv.Key, kv => kv.Value);
        var path = checkpointer.Save(step, new CheckpointState([.. root.ShardedState(), .. optimSharded], replicated));
        Say($"checkpoint {path}");
        return path;
    }

    private int Restore(ShardedCheckpointer checkpointer, FsdpModule root, Optimizer8bit optimizer)
    {
        if (CheckpointCatalog.LatestPointer(checkpointer.Root) is null)
        {
            Say("--resume: no checkpoint yet, starting fresh");
            return 0;
        }

        using var loaded = checkpointer.Load(new CheckpointLoadOptions { FallbackToPrevious = true });
        var model = loaded.Sharded.Where(kv => !kv.Key.StartsWith("optim.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value.Local);
        root.LoadShardedState(model, loaded.Replicated);
        ShardedOptimizer.Load(root, optimizer, loaded.Sharded.ToDictionary(kv => kv.Key, kv => kv.Value.Local), loaded.Replicated);
        return (int)loaded.Step;
    }

    private double Evaluate(LlamaForCausalLM model, PackedDataset heldOut) => HeldOutLoss(model, heldOut, options.MicroBatch, Device, comm);

    private string Sample(LlamaForCausalLM model, BpeTokenizer tokenizer, LlamaConfig config) =>
        options.SampleTokens <= 0 ? string.Empty : TextGenerator.Generate(model, tokenizer, options.Prompt, config.MaxPositionEmbeddings,
            new GenerationOptions { MaxNewTokens = options.SampleTokens, TopK = 0, Temperature = 0 }, Device).ReplaceLineEndings(" ");

    /// <summary>" gpu U/T MiB" (device-wide use, caching allocator included) on CUDA; empty on CPU.</summary>
    private string GpuMemory()
    {
        if (Device.type != DeviceType.CUDA)
        {
            return string.Empty;
        }

        var (free, total) = BnbDist.Backends.Interop.CudaRuntime.MemoryInfo();
        return $" gpu {(total - free) >> 20}/{total >> 20} MiB";
    }

    private void Say(string line)
    {
        if (leader)
        {
            Console.WriteLine(line);
        }
    }
}
