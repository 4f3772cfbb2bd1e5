// qlora: sharded QLoRA fine-tuning, the README's first command. Run under bnbrun for several ranks:
//   bnbrun --nproc 2 --standalone examples/BnbDist.Examples.QLoRA/bin/Release/net10.0/qlora.dll [flags]
// or alone as one rank. --eval-adapter DIR instead evaluates a saved adapter on the held-out text and exits.
// `qlora.dll reference` runs the fixed 1.1B speed/memory reference of issue #9 on one device (bench/gpu/run.sh qlora-ref).
using System.CommandLine;
using BnbDist.Backends.Interop;
using BnbDist.Collectives;
using BnbDist.Examples.Llama;
using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.QLoRA;
using BnbDist.Examples.QLoRA.Reference;

var o = new QLoraOptions { ModelDirectory = "", OutputDirectory = "" };
var model = new Option<string>("--model") { Description = "Base model folder.", DefaultValueFactory = _ => DataCache.BaseModelDirectory() };
var corpus = new Option<string?>("--corpus") { Description = "Plain-text file to fine-tune on (default: Jane Austen's novels from the data cache)." };
var output = new Option<string>("--out") { Description = "Run folder: checkpoints, metrics.jsonl, loss.png, adapter/, summary.json.", DefaultValueFactory = _ => Path.Combine(DataCache.Root, "runs", "qlora") };
var steps = new Option<int>("--steps") { Description = "Optimizer steps in total.", DefaultValueFactory = _ => o.Steps };
var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => o.SequenceLength };
var batch = new Option<int>("--micro-batch") { Description = "Sequences per micro-batch per rank.", DefaultValueFactory = _ => o.MicroBatch };
var accum = new Option<int>("--grad-accum") { Description = "Micro-batches per step.", DefaultValueFactory = _ => o.GradientAccumulation };
var lr = new Option<double>("--lr") { Description = "Peak learning rate (cosine schedule with warm-up).", DefaultValueFactory = _ => o.LearningRate };
var warmup = new Option<int>("--warmup") { Description = "Warm-up steps.", DefaultValueFactory = _ => o.WarmupSteps };
var rank = new Option<int>("--lora-r") { Description = "LoRA rank.", DefaultValueFactory = _ => o.LoraRank };
var alpha = new Option<double>("--lora-alpha") { Description = "LoRA alpha.", DefaultValueFactory = _ => o.LoraAlpha };
var every = new Option<int>("--checkpoint-every") { Description = "Checkpoint every K steps (and at the end).", DefaultValueFactory = _ => o.CheckpointEvery };
var keep = new Option<int>("--keep") { Description = "Checkpoints to keep.", DefaultValueFactory = _ => o.KeepCheckpoints };
var resume = new Option<bool>("--resume") { Description = "Continue from the latest checkpoint in --out." };
var evalSeqs = new Option<int>("--eval-sequences") { Description = "Held-out sequences for perplexity (a multiple of the world size).", DefaultValueFactory = _ => o.EvalSequences };
var sample = new Option<int>("--sample-tokens") { Description = "Tokens of the generation sample (0 = none).", DefaultValueFactory = _ => o.SampleTokens };
var stopAfter = new Option<int>("--stop-after") { Description = "Stop after this many steps of this run (to test resume).", DefaultValueFactory = _ => 0 };
var evalAdapter = new Option<string?>("--eval-adapter") { Description = "Evaluate this saved LoRA adapter on the held-out text, write eval.json into it, and exit." };
var root = new RootCommand("Sharded QLoRA fine-tuning: NF4 + double-quant base, LoRA on every projection, PagedAdamW8bit, FullyShard.")
{
    model, corpus, output, steps, seqLen, batch, accum, lr, warmup, rank, alpha, every, keep, resume, evalSeqs, sample, stopAfter, evalAdapter,
};

root.SetAction(parse =>
{
    TorchRuntime.PreloadFromEnvironment();
    var options = o with
    {
        ModelDirectory = parse.GetValue(model)!,
        CorpusFile = parse.GetValue(corpus),
        OutputDirectory = parse.GetValue(output)!,
        Steps = parse.GetValue(steps),
        SequenceLength = parse.GetValue(seqLen),
        MicroBatch = parse.GetValue(batch),
        GradientAccumulation = parse.GetValue(accum),
        LearningRate = parse.GetValue(lr),
        WarmupSteps = parse.GetValue(warmup),
        LoraRank = parse.GetValue(rank),
        LoraAlpha = parse.GetValue(alpha),
        CheckpointEvery = parse.GetValue(every),
        KeepCheckpoints = parse.GetValue(keep),
        Resume = parse.GetValue(resume),
        EvalSequences = parse.GetValue(evalSeqs),
        SampleTokens = parse.GetValue(sample),
        StopAfter = parse.GetValue(stopAfter),
    };
    return DistributedEnvironment.RunWorker(_ =>
    {
        try
        {
            using var group = ProcessGroup.Join();
            if (parse.GetValue(evalAdapter) is { } adapter)
            {
                var loss = AdapterEvaluation.Run(options, adapter, group.Communicator);
                Console.WriteLine($"held-out loss with {adapter}: {loss:R}");
                return 0;
            }

            new QLoraJob(options, group.Communicator).Run();
            return 0;
        }
        catch (Exception ex) when (ex is QLoraSetupException or CorpusException or BnbDist.Examples.Llama.Modeling.LlamaConfigException)
        {
            Console.Error.WriteLine($"qlora: {ex.Message}");
            return 2;
        }
    });
});

root.Subcommands.Add(ReferenceCommand.Create());
return root.Parse(args).Invoke();
