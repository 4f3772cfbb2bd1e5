using System.Diagnostics;
using System.Text.Json;
using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Data;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Tokenization;
using BnbDist.Examples.Llama.Training;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Pretraining;

/// <summary>What pretraining produced (also written as <c>pretrain.json</c> beside the model).</summary>
/// <param name="Directory">The model directory.</param>
/// <param name="Steps">Optimizer steps run.</param>
/// <param name="FinalTrainLoss">Mean training loss over the last logging window.</param>
/// <param name="HeldOutLoss">Held-out loss (nats/token) after training.</param>
/// <param name="HeldOutPerplexity">exp(held-out loss).</param>
/// <param name="Seconds">Wall time of training (tokenizer and evaluation excluded).</param>
/// <param name="TokensPerSecond">Training throughput.</param>
/// <param name="Parameters">Model parameters.</param>
/// <param name="Sample">A seeded top-k continuation of <see cref="BaseModelPretraining.SamplePrompt"/> after training.</param>
/// <param name="Cached">True when an existing model was found and nothing was trained.</param>
public sealed record PretrainResult(string Directory, int Steps, double FinalTrainLoss, double HeldOutLoss, double HeldOutPerplexity,
    double Seconds, double TokensPerSecond, long Parameters, string Sample, bool Cached);

/// <summary>
/// Makes the examples' base model: trains the tokenizer on the State of the Union addresses, pretrains a small Llama on
/// them (fp32, AdamW, cosine schedule) and saves model, config and tokenizer in the data cache. Skips all of it when
/// a complete model is already there.
/// </summary>
public static class BaseModelPretraining
{
    /// <summary>Metrics file written beside the model.</summary>
    public const string MetricsFile = "pretrain.json";

    /// <summary>Prompt of the sample written to the metrics.</summary>
    public const string SamplePrompt = "The Congress";

    /// <summary>How the sample is drawn (seeded top-k, so it is reproducible).</summary>
    public static GenerationOptions SampleOptions { get; } = new() { MaxNewTokens = 40, TopK = 40, Temperature = 0.8, Seed = 1 };

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>The cached model if it is complete and consistent, else pretrains it.</summary>
    /// <param name="options">Model and training settings.</param>
    /// <param name="dataRoot">Data cache root (default <see cref="DataCache.Root"/>).</param>
    /// <param name="log">Progress lines (default: none).</param>
    /// <param name="force">Retrain even when cached.</param>
    public static PretrainResult EnsureBaseModel(PretrainOptions options, string? dataRoot = null, Action<string>? log = null, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        var dir = DataCache.BaseModelDirectory(dataRoot);
        var metrics = Path.Combine(dir, MetricsFile);
        if (!force && LlamaCheckpoint.Exists(dir) && File.Exists(metrics))
        {
            // Reading config + tokenizer validates the pair; a broken cache is rebuilt rather than trusted.
            try
            {
                LlamaCheckpoint.ReadTokenizer(dir, LlamaCheckpoint.ReadConfig(dir));
                var cached = JsonSerializer.Deserialize<PretrainResult>(File.ReadAllText(metrics))!;
                log?.Invoke($"base model already cached in {dir} (held-out loss {cached.HeldOutLoss:F3}); nothing to do.");
                return cached with { Directory = dir, Cached = true };
            }
            catch (Exception ex) when (ex is IOException or FormatException or JsonException or TokenizerMismatchException)
            {
                log?.Invoke($"cached model in {dir} is unusable ({ex.Message}); pretraining again.");
            }
        }

        return Pretrain(options, SotuCorpus.Load(SotuCorpus.DataDirectory(dataRoot)), dir, log);
    }

    /// <summary>Trains tokenizer and model on <paramref name="documents"/> and saves them to <paramref name="directory"/>.</summary>
    public static PretrainResult Pretrain(PretrainOptions options, IReadOnlyList<TextDocument> documents, string directory, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(documents);
        log ??= _ => { };
        var clock = Stopwatch.StartNew();
        var tokenizer = BpeTokenizer.Train(documents.Select(d => d.Text), options.VocabSize);
        log($"tokenizer: byte-level BPE, {tokenizer.VocabSize} ids, trained in {clock.Elapsed.TotalSeconds:F1} s");

        clock.Restart();
        var config = options.ModelConfig(tokenizer.VocabSize);
        SequenceTooLongException.ThrowIfTooLong(options.SequenceLength, config);
        var (train, heldOut) = PackedDataset.FromDocuments(documents, tokenizer, options.SequenceLength).SplitHeldOut(options.HeldOutFraction);
        log($"data: {documents.Count} documents → {train.Count} training + {heldOut.Count} held-out sequences of {options.SequenceLength} tokens ({clock.Elapsed.TotalSeconds:F1} s)");

        manual_seed(options.Seed);
        var model = new LlamaForCausalLM(config);
        var parameters = model.parameters().Sum(p => p.numel());
        log($"model: {parameters / 1e6:F2} M parameters, hidden {config.HiddenSize}, {config.NumHiddenLayers} layers, " +
            $"{config.NumAttentionHeads} heads / {config.KeyValueHeads} kv heads, tied head; {get_num_threads()} threads");

        using var optimizer = optim.AdamW(model.parameters(), options.LearningRate, beta1: 0.9, beta2: 0.95, weight_decay: options.WeightDecay);
        var trainer = new CausalLmTrainer(model, optimizer,
            new CosineSchedule(options.LearningRate, options.WarmupSteps, options.Steps, options.MinLearningRateRatio), options.MaxGradNorm);
        var (steps, finalLoss, seconds, tokens) = Train(trainer, train, options, log);

        var eval = Perplexity.Evaluate(model, heldOut, options.BatchSize);
        var sample = TextGenerator.Generate(model, tokenizer, SamplePrompt, config.MaxPositionEmbeddings, SampleOptions);
        log($"held-out loss {eval.MeanLoss:F3} (perplexity {eval.Perplexity:F1}); sample (top-{SampleOptions.TopK}): {SamplePrompt}{sample}");

        LlamaCheckpoint.Save(model, tokenizer, directory);
        var result = new PretrainResult(directory, steps, finalLoss, eval.MeanLoss, eval.Perplexity, seconds, tokens / seconds, parameters, sample, Cached: false);
        File.WriteAllText(Path.Combine(directory, MetricsFile), JsonSerializer.Serialize(result, JsonOptions));
        log($"saved {directory}");
        return result;
    }

    private static (int Steps, double FinalLoss, double Seconds, long Tokens) Train(CausalLmTrainer trainer, PackedDataset train, PretrainOptions options, Action<string> log)
    {
        var clock = Stopwatch.StartNew();
        var batchesPerEpoch = train.Count / options.BatchSize;
        if (batchesPerEpoch == 0)
        {
            throw new ArgumentException($"{train.Count} training sequences do not fill one batch of {options.BatchSize}.", nameof(train));
        }

        PackedDataset? epoch = null;
        long tokens = 0;
        var recent = new Queue<double>(); // the last LogEvery losses: what "final loss" reports
        var totalSteps = options.Steps;
        var firstStep = TimeSpan.Zero;
        var fitAt = Math.Max(2, options.CalibrationSteps);
        var warmup = options.WarmupSteps;
        for (var step = 0; step < totalSteps; step++)
        {
            var slot = step % batchesPerEpoch;
            if (slot == 0)
            {
                epoch = train.Shuffled(options.Seed + (step / batchesPerEpoch));
            }

            using var batch = epoch!.Batch(slot * options.BatchSize, options.BatchSize);
            var r = trainer.Step([batch]);
            tokens += r.Tokens;
            recent.Enqueue(r.Loss);
            if (recent.Count > options.LogEvery)
            {
                recent.Dequeue();
            }

            if (step == 0)
            {
                firstStep = clock.Elapsed; // includes one-time set-up, so it is left out of the step time
            }

            // Under a time budget the step count is fitted twice: after the calibration steps, and again a fifth
            // of the way in (early steps run slower while caches warm up); warm-up is fixed by the first fit.
            if (options.TimeBudget is { } budget && step + 1 == fitAt && step + 1 < totalSteps)
            {
                var perStep = (clock.Elapsed - firstStep) / step;
                var first = fitAt == Math.Max(2, options.CalibrationSteps);
                totalSteps = (int)Math.Clamp(Math.Floor((budget - firstStep) / perStep) + 1, step + 1, options.Steps);
                warmup = first ? Math.Min(options.WarmupSteps, Math.Max(1, totalSteps / 4)) : warmup;
                trainer.Schedule = new CosineSchedule(options.LearningRate, warmup, totalSteps, options.MinLearningRateRatio);
                fitAt = first ? Math.Max(fitAt + 1, totalSteps / 5) : -1;
                log($"time budget {budget.TotalMinutes:F1} min at {perStep.TotalSeconds:F2} s/step: {totalSteps} steps (cap {options.Steps})");
            }

            if ((step + 1) % options.LogEvery == 0 || step + 1 == totalSteps)
            {
                var elapsed = clock.Elapsed.TotalSeconds;
                log($"step {step + 1}/{totalSteps}  loss {recent.Average():F3}  lr {r.LearningRate:E2}  grad-norm {r.GradNorm:F2}  " +
                    $"{tokens / elapsed:F0} tok/s  {elapsed:F0} s");
            }
        }

        return (totalSteps, recent.Average(), clock.Elapsed.TotalSeconds, tokens);
    }
}
