// Pretrains the examples' base model once and caches it (model.safetensors, config.json, tokenizer.json) in
// $BNBDIST_DATA/models/sotu-base (default .data/ in the repository root). Needs the corpora: examples/data/fetch.sh.
// Run: dotnet run --project examples/BnbDist.Examples.Pretrain -c Release [-- --force --minutes 5 --threads 2]
using System.CommandLine;
using BnbDist.Backends.Interop;
using BnbDist.Examples.Llama;
using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Pretraining;
using static TorchSharp.torch;

var defaults = new PretrainOptions();
var force = new Option<bool>("--force") { Description = "Pretrain again even if a cached model exists." };
var steps = new Option<int>("--steps") { Description = "Optimizer steps at most.", DefaultValueFactory = _ => defaults.Steps };
var minutes = new Option<double>("--minutes")
{
    Description = "Training time budget: the step count is fitted to it after a few timed steps (0 = exactly --steps).",
    DefaultValueFactory = _ => defaults.TimeBudget?.TotalMinutes ?? 0,
};
var lr = new Option<double>("--lr") { Description = "Peak AdamW learning rate.", DefaultValueFactory = _ => defaults.LearningRate };
var batch = new Option<int>("--batch-size") { Description = $"Sequences of {defaults.SequenceLength} tokens per step.", DefaultValueFactory = _ => defaults.BatchSize };
var threads = new Option<int>("--threads") { Description = "CPU threads for torch (0 = torch's default).", DefaultValueFactory = _ => 0 };
var dataDir = new Option<string?>("--data-dir") { Description = $"Data cache root (default ${DataCache.EnvironmentVariable}, else .data/ in the repository root)." };
var root = new RootCommand("Pretrains the examples' small Llama base model on the State of the Union addresses (skips if cached).")
{
    force, steps, minutes, lr, batch, threads, dataDir,
};

root.SetAction(parse =>
{
    TorchRuntime.PreloadFromEnvironment();
    if (parse.GetValue(threads) is > 0 and var n)
    {
        set_num_threads(n);
    }

    var options = defaults with
    {
        Steps = parse.GetValue(steps),
        LearningRate = parse.GetValue(lr),
        BatchSize = parse.GetValue(batch),
        TimeBudget = parse.GetValue(minutes) is > 0 and var m ? TimeSpan.FromMinutes(m) : null,
    };
    try
    {
        var result = BaseModelPretraining.EnsureBaseModel(options, parse.GetValue(dataDir), Console.WriteLine, parse.GetValue(force));
        if (!result.Cached)
        {
            Console.WriteLine($"pretrained {result.Parameters / 1e6:F2} M parameters for {result.Steps} steps in {result.Seconds / 60:F1} min " +
                              $"({result.TokensPerSecond:F0} tok/s): train loss {result.FinalTrainLoss:F3}, held-out loss {result.HeldOutLoss:F3} " +
                              $"(perplexity {result.HeldOutPerplexity:F1})");
        }

        return 0;
    }
    catch (CorpusException ex)
    {
        Console.Error.WriteLine(ex.Message);
        return 2;
    }
});

return root.Parse(args).Invoke();
