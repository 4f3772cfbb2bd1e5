// Sharding test worker: trains TinyLm for --steps steps on a fixed synthetic token stream and writes the global mean
// loss of every step and the final trainable weights (whole tensors) as JSON to --out (rank 0 only).
//   --variant qlora|int8|full   4-bit NF4 (double quant) base + LoRA r=32 on the MLP, the same on a frozen LLM.int8
//                               base (Linear8bitLt, threshold 6), or every weight trained in f32
//   --reference            one process, no FullyShard, the whole global batch (the run sharded runs must reproduce)
//   --steps N              training steps (default 20)
//   --mismatch-rank R      rank R builds a different model (to test the error on every rank)
//   --save-dir D --save-at K   save a sharded checkpoint (model + 8-bit optimizer state) to root D after step K
//   --resume-dir D --resume-step K   load step K from root D (any saved world size) and train steps K..N-1
using System.Globalization;
using System.Text.Json;
using BnbDist.Collectives;
using BnbDist.Nn.Surgery;
using BnbDist.Optim8bit;
using BnbDist.Optim8bit.Config;
using BnbDist.Sharding;
using BnbDist.Sharding.Checkpoints;
using ShardingWorker;
using TorchSharp;
using static TorchSharp.torch;

string Arg(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

const int GlobalBatch = 12, SeqLen = 16, Vocab = 64;
var steps = int.Parse(Arg("--steps", "20"), CultureInfo.InvariantCulture);
var variant = Arg("--variant", "qlora");
var reference = args.Contains("--reference");
var outPath = Arg("--out", "sharding-result.json");
LearningRate = double.Parse(Arg("--lr", "1e-3"), CultureInfo.InvariantCulture);

return DistributedEnvironment.RunWorker(env =>
{
    torch.set_num_threads(1);
    var mismatch = int.Parse(Arg("--mismatch-rank", "-1"), CultureInfo.InvariantCulture) == env.Rank;
    manual_seed(1234);
    var model = new TinyLm(Vocab, 128, mismatch ? 256 : 384, nLayers: 2);
    if (variant is "qlora" or "int8")
    {
        ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { LoadIn4Bit = variant == "qlora", QuantType = BnbDist.QuantType.NF4, UseDoubleQuant = true });
        ModelSurgery.AddLora(model, new LoraConfig { R = 32, Alpha = 16, TargetModules = ["gate_proj", "up_proj", "down_proj"] });
        foreach (var (name, p) in model.named_parameters())
        {
            p.requires_grad = name.Contains("lora_", StringComparison.Ordinal);
        }
    }

    if (reference)
    {
        using var refOptimizer = new AdamW8bit(model.parameters().Where(p => p.requires_grad).ToList(), lr: LearningRate, weightDecay: 0.01);
        var losses = Train(model, refOptimizer, 0, steps, 0, 1, loss =>
        {
            loss.backward();
        }, null, null);
        Write(losses, Trainable(model));
        return 0;
    }

    var (store, comm) = env.InitProcessGroup(TimeSpan.FromSeconds(60));
    using (store)
    using (comm)
    {
        foreach (var layer in model.Layers)
        {
            FullyShard.Apply(layer, comm);
        }

        var root = FullyShard.Apply(model, comm);
        ShardedOptimizer.ConfigureStateBits(root, GlobalOptimManager.Instance);
        using var optimizer = new AdamW8bit(root.Parameters(), lr: LearningRate, weightDecay: 0.01);
        var start = 0;
        if (Arg("--resume-dir", string.Empty) is { Length: > 0 } resumeDir)
        {
            using var checkpointer = new ShardedCheckpointer(resumeDir, comm);
            using var loaded = checkpointer.Load(new CheckpointLoadOptions { Step = long.Parse(Arg("--resume-step", "0"), CultureInfo.InvariantCulture) });
            var shards = loaded.Sharded.ToDictionary(kv => kv.Key, kv => kv.Value.Local);
            root.LoadShardedState(shards.Where(kv => !kv.Key.StartsWith("optim.", StringComparison.Ordinal)).ToDictionary(), loaded.Replicated);
            ShardedOptimizer.Load(root, optimizer, shards, loaded.Replicated);
            start = (int)loaded.Step;
        }

        Action<int>? afterStep = null;
        if (Arg("--save-dir", string.Empty) is { Length: > 0 } saveDir)
        {
            var saveAt = int.Parse(Arg("--save-at", "1"), CultureInfo.InvariantCulture);
            afterStep = done =>
            {
                if (done == saveAt)
                {
                    var (optimSharded, optimReplicated) = ShardedOptimizer.State(root, optimizer);
                    using var checkpointer = new ShardedCheckpointer(saveDir, comm);
                    checkpointer.Save(done, new CheckpointState([.. root.ShardedState(), .. optimSharded], root.ReplicatedState().Concat(optimReplicated).ToDictionary()));
                }
            };
        }

        var losses = Train(model, optimizer, start, steps, env.Rank, env.WorldSize, root.Backward, comm, afterStep);
        root.Unshard();
        var weights = Trainable(model);
        root.Reshard();
        Console.WriteLine($"rank {env.Rank}: local bytes {root.LocalBytes} padded {root.PaddedLocalBytes} atoms {root.AtomBytes} full {root.FullBytes} gathered/step {root.GatheredBytesPerStep}");
        if (env.Rank == 0)
        {
            Write(losses, weights);
        }

        comm.Barrier();
    }

    return 0;
});

// Trains steps [from, steps) with 8-bit blockwise AdamW (32-bit state below 4096 elements of the whole tensor, as
// bitsandbytes); step s always sees the same global batch, so a resumed run sees what an uninterrupted one would.
static List<double> Train(TinyLm model, AdamW8bit optimizer, int from, int steps, int rank, int world,
    Action<Tensor> backward, ICommunicator? comm, Action<int>? afterStep)
{
    var losses = new List<double>();
    var per = GlobalBatch / world;
    for (var step = from; step < steps; step++)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator((ulong)(1000 + step));
        var all = randint(0, Vocab, [GlobalBatch, SeqLen + 1], generator: gen);
        var mine = all.narrow(0, rank * per, per);
        var logits = model.call(mine.narrow(1, 0, SeqLen));
        var loss = nn.functional.cross_entropy(logits.reshape(-1, Vocab), mine.narrow(1, 1, SeqLen).reshape(-1));
        var global = loss.detach().clone();
        comm?.AllReduce(global, ReduceOp.Avg);
        losses.Add(global.item<float>());
        optimizer.zero_grad();
        backward(loss);
        optimizer.step();
        afterStep?.Invoke(step + 1);
    }

    return losses;
}

static Dictionary<string, float[]> Trainable(TinyLm model) =>
    model.named_parameters().Where(p => p.parameter.requires_grad)
        .ToDictionary(p => p.name, p => p.parameter.detach().reshape(-1).to_type(ScalarType.Float32).data<float>().ToArray());

void Write(List<double> losses, Dictionary<string, float[]> weights) =>
    File.WriteAllText(outPath, JsonSerializer.Serialize(new { losses, weights }));

/// <summary>Worker-wide settings read from the command line.</summary>
internal static partial class Program
{
    /// <summary>AdamW8bit's learning rate (--lr).</summary>
    public static double LearningRate { get; set; } = 1e-3;
}
