using BnbDist.Collectives;
using BnbDist.Nn;
using BnbDist.Nn.Checkpoints;
using BnbDist.Nn.Lora;
using BnbDist.Serialization;
using BnbDist.Sharding.Checkpoints;
using BnbDist.Tests;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>A block holding bitsandbytes' golden NF4 and FP4 Linear4bit layers (320 → 256, bias), optionally LoRA-wrapped.</summary>
internal sealed class GoldenBlock : Module<Tensor, Tensor>
{
    private readonly Module<Tensor, Tensor> nf4;
    private readonly Module<Tensor, Tensor> fp4;

    public GoldenBlock(bool lora, int seed)
        : base(nameof(GoldenBlock))
    {
        nf4 = Layer(QuantType.NF4, lora, seed);
        fp4 = Layer(QuantType.FP4, lora, seed + 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => nf4.call(x).add(fp4.call(x));

    private static Module<Tensor, Tensor> Layer(QuantType type, bool lora, int seed)
    {
        var prefix = $"lin4.{QuantState.QuantTypeName(type)}.";
        var layer = new Linear4bit(320, 256, true, ScalarType.BFloat16, true, type);
        layer.load_state_dict(Golden.Data.Names.Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && n != prefix + "x" && n != prefix + "y")
            .ToDictionary(n => n[prefix.Length..], Golden.Get));
        if (!lora)
        {
            return layer;
        }

        var adapted = new LoraLinear(layer, r: 4, alpha: 8);
        HfModels.Fill(adapted.LoraA, seed);
        HfModels.Fill(adapted.LoraB, seed + 100); // non-zero B, so a lost adapter would show
        return adapted;
    }
}

/// <summary>The golden block plus a bf16 head (a float parameter whose f32 shards must go back to bf16 on export).</summary>
internal sealed class GoldenModel : Module<Tensor, Tensor>
{
    private readonly GoldenBlock block;
    private readonly Linear head;

    public GoldenModel(bool lora, int seed)
        : base(nameof(GoldenModel))
    {
        block = new GoldenBlock(lora, seed);
        head = Linear(256, 16, hasBias: true, dtype: ScalarType.BFloat16);
        HfModels.Fill(head.weight!, seed + 2);
        HfModels.Fill(head.bias!, seed + 3);
        RegisterComponents();
    }

    public GoldenBlock Block => block;

    public override Tensor forward(Tensor x) => head.call(block.call(x).to_type(ScalarType.BFloat16));
}

/// <summary>Builds, shards and saves the golden model, and compares Hugging Face folders tensor by tensor.</summary>
internal static class HfModels
{
    public const int R = 4;

    /// <summary>Overwrites <paramref name="t"/> with values from its own generator (ranks are threads sharing torch's global one).</summary>
    public static void Fill(Tensor t, int seed)
    {
        using var noGrad = no_grad();
        using var v = randn(t.shape, generator: new Generator((ulong)seed)).mul(0.1);
        t.copy_(v);
    }

    public static FsdpModule Wrap(GoldenModel model, ICommunicator comm)
    {
        FullyShard.Apply(model.Block, comm);
        return FullyShard.Apply(model, comm);
    }

    /// <summary>Saves the LoRA golden model (values from <paramref name="seed"/>) on <paramref name="world"/> ranks as step 1; returns the folder.</summary>
    public static string SaveSharded(string root, int world, int seed) =>
        RankThreads.RunAll(world, comm =>
        {
            var model = new GoldenModel(lora: true, seed);
            var fsdp = Wrap(model, comm!);
            using var ckpt = new ShardedCheckpointer(root, comm);
            return ckpt.Save(1, new CheckpointState(fsdp.ShardedState(), fsdp.ReplicatedState()));
        })[0];

    /// <summary>What the unsharded writers produce for the same model: HfCheckpoint.Save of the base and ModelSurgery.SaveAdapter.</summary>
    public static (string Model, string Adapter) Unsharded(string folder, int seed)
    {
        var model = Path.Combine(folder, "model");
        var adapter = Path.Combine(folder, "adapter");
        HfCheckpoint.Save(new GoldenModel(lora: false, seed), model);
        Nn.Surgery.ModelSurgery.SaveAdapter(new GoldenModel(lora: true, seed), adapter, new Nn.Surgery.LoraConfig { R = R, Alpha = 8, TargetModules = ["fp4", "nf4"] });
        return (model, adapter);
    }

    /// <summary>Same keys, dtypes, shapes and bytes; returns the first difference or null.</summary>
    public static string? Difference(IReadOnlyDictionary<string, Tensor> expected, IReadOnlyDictionary<string, Tensor> actual)
    {
        var missing = expected.Keys.Except(actual.Keys).Concat(actual.Keys.Except(expected.Keys)).FirstOrDefault();
        if (missing is not null)
        {
            return $"key {missing} only on one side";
        }

        foreach (var (key, e) in expected)
        {
            var a = actual[key];
            if (e.dtype != a.dtype || !e.shape.SequenceEqual(a.shape) || !CheckpointTestData.Bytes(e).AsSpan().SequenceEqual(CheckpointTestData.Bytes(a)))
            {
                return $"{key}: {e.dtype} [{string.Join(",", e.shape)}] vs {a.dtype} [{string.Join(",", a.shape)}] or different bytes";
            }
        }

        return null;
    }

    public static Dictionary<string, Tensor> Adapter(string folder) => SafeTensorsFile.Load(Path.Combine(folder, Nn.Surgery.ModelSurgery.AdapterFile));
}
