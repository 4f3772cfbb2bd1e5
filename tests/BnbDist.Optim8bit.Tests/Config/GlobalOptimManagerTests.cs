using BnbDist.Optim8bit.Config;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Config;

/// <summary>
/// GlobalOptimManager overrides reach the optimizers: by parameter object (no registration, as the sharding layer uses
/// them on 1-D shards), by registered name, by module override; optim_bits decides the state form at creation, lr and
/// betas apply every step; and the config fingerprint changes with any of them and names the first differing parameter.
/// </summary>
public class GlobalOptimManagerTests
{
    [Fact]
    public void ParameterOverrideForcesStatePrecisionOfUnregisteredShards()
    {
        var manager = new GlobalOptimManager();
        // 1-D shards: the first is large but its full parameter was small (force 32-bit); the second is small but its
        // full parameter was large (force 8-bit: optim_bits 8 and min_8bit_size 0).
        using var bigShard = TestGrads.Param(randn(8192));
        using var smallShard = TestGrads.Param(randn(1000));
        using var plain = TestGrads.Param(randn(8192));
        manager.OverrideConfig(bigShard, "optim_bits", 32);
        manager.OverrideConfig(smallShard, new Dictionary<string, object> { ["optim_bits"] = 8, ["min_8bit_size"] = 0 });
        using var opt = new AdamW8bit([bigShard, smallShard, plain], manager: manager);
        Step(opt, bigShard, smallShard, plain);
        Assert.False(opt.StateOf(bigShard).Is8bit);
        Assert.True(opt.StateOf(smallShard).Is8bit);
        Assert.True(opt.StateOf(plain).Is8bit);
    }

    [Fact]
    public void OverridesMadeAfterConstructionApplyAtTheFirstStep()
    {
        // bitsandbytes #1269: override_config after the optimizer was built.
        var manager = new GlobalOptimManager();
        using var p = TestGrads.Param(randn(8192));
        using var opt = new Adam32bit([p], manager: manager);
        manager.OverrideConfig(p, "optim_bits", 8);
        Step(opt, p);
        Assert.True(opt.StateOf(p).Is8bit);
    }

    [Fact]
    public void NamesAndModuleOverridesResolveThroughRegisteredModules()
    {
        var manager = new GlobalOptimManager();
        using var model = nn.Sequential(("emb", nn.Linear(64, 128)), ("out", nn.Linear(128, 64)));
        manager.RegisterParameters(model);
        manager.OverrideConfig("emb.weight", "optim_bits", 32);
        manager.RegisterModuleOverride(model.named_children().Single(c => c.name == "out").module, "weight", new OptimConfigOverride { Lr = 0.0 });
        var ps = model.parameters().ToList();
        using var opt = new AdamW8bit(ps, manager: manager);
        var outWeight = model.get_parameter("out.weight")!;
        var before = outWeight.detach().clone();
        Step(opt, [.. ps]);
        Assert.False(opt.StateOf(model.get_parameter("emb.weight")!).Is8bit);
        Assert.True(opt.StateOf(outWeight).Is8bit);
        // lr 0 for out.weight: only decoupled weight decay (1 − lr·wd = 1) could move it, so it stays bit-identical.
        Assert.True(outWeight.detach().eq(before).all().item<bool>());
        Assert.Contains(opt.ConfigFingerprint().Parameters, d => d.Contains("name=emb.weight", StringComparison.Ordinal) && d.Contains("state_bits=32", StringComparison.Ordinal));
    }

    [Fact]
    public void HyperparameterOverridesWinOverTheGroupAndTheScheduler()
    {
        var manager = new GlobalOptimManager();
        using var a = TestGrads.Param(randn(5000));
        using var b = TestGrads.Param(a.detach());
        using var c = TestGrads.Param(a.detach());
        manager.OverrideConfig(a, "betas", (0.8, 0.99));
        manager.OverrideConfig(a, "lr", 2e-3);
        using var overridden = new Adam8bit([a], manager: manager);
        var scheduler = optim.lr_scheduler.StepLR(overridden, 1, 0.5);
        using var explicitOpt = new Adam8bit([b], lr: 2e-3, beta1: 0.8, beta2: 0.99, manager: new GlobalOptimManager());
        using var plainOpt = new Adam8bit([c], manager: new GlobalOptimManager());
        for (var s = 0; s < 3; s++)
        {
            using var g = randn(5000).mul(0.01f);
            Step(overridden, g, a);
            Step(explicitOpt, g, b);
            Step(plainOpt, g, c);
            scheduler.step();
        }

        Assert.Equal(TestGrads.Floats(b), TestGrads.Floats(a));
        Assert.NotEqual(TestGrads.Floats(c), TestGrads.Floats(a));
    }

    [Fact]
    public void EachParameterOfAMultiParameterOverrideGetsItsOwnEntry()
    {
        // bitsandbytes #2029: one dict shared by all parameters of an override_config call.
        var manager = new GlobalOptimManager();
        using var p1 = TestGrads.Param(randn(10));
        using var p2 = TestGrads.Param(randn(10));
        manager.OverrideConfig([p1, p2], "lr", 0.1);
        manager.OverrideConfig(p1, "lr", 0.2);
        using var opt = new Adam8bit([p1, p2], manager: manager);
        var lines = opt.ConfigFingerprint().Parameters;
        Assert.Contains("lr=0.2 ", lines[0], StringComparison.Ordinal);
        Assert.Contains("lr=0.1 ", lines[1], StringComparison.Ordinal);
    }

    [Fact]
    public void FingerprintIsDeterministicAndNamesTheFirstMismatch()
    {
        using var model = nn.Sequential(("a", nn.Linear(64, 128)), ("b", nn.Linear(128, 64)));
        var m1 = new GlobalOptimManager();
        var m2 = new GlobalOptimManager();
        m1.RegisterParameters(model);
        m2.RegisterParameters(model);
        using var o1 = new AdamW8bit(model.parameters().ToList(), manager: m1);
        using var o2 = new AdamW8bit(model.parameters().ToList(), manager: m2);
        var f1 = o1.ConfigFingerprint();
        var again = o1.ConfigFingerprint();
        Assert.Equal(f1.Hash, again.Hash);
        Assert.Equal(f1.Parameters, again.Parameters);
        Assert.Equal(f1.Hash, o2.ConfigFingerprint().Hash);
        Assert.Null(f1.DescribeMismatch(o2.ConfigFingerprint()));

        m2.OverrideConfig("b.weight", "optim_bits", 32);
        var f2 = o2.ConfigFingerprint();
        Assert.NotEqual(f1.Hash, f2.Hash);
        Assert.Equal(2, f1.FirstMismatchingParameter(f2)); // a.weight, a.bias, b.weight
        Assert.Contains("b.weight", f1.DescribeMismatch(f2), StringComparison.Ordinal);
    }

    [Fact]
    public void BadKeysAndValuesAreRefused()
    {
        var manager = new GlobalOptimManager();
        using var p = TestGrads.Param(randn(10));
        Assert.Equal("key", Assert.Throws<ArgumentException>(() => manager.OverrideConfig(p, "optimbits", 8)).ParamName);
        Assert.Equal("value", Assert.Throws<ArgumentException>(() => manager.OverrideConfig(p, "optim_bits", 16)).ParamName);
        Assert.Equal("lr", Assert.Throws<ArgumentException>(() => manager.OverrideConfig(p, "lr", double.NaN)).ParamName);
        Assert.Equal("betas", Assert.Throws<ArgumentException>(() => manager.OverrideConfig(p, "betas", (0.9, double.PositiveInfinity))).ParamName);
    }

    [Fact]
    public void TheProcessWideManagerIsOneInstanceAndTheOptimizersDefault()
    {
        Assert.Same(GlobalOptimManager.Instance, GlobalOptimManager.GetInstance());
        using var p = TestGrads.Param(randn(10));
        using var opt = new Adam8bit([p]);
        Assert.Same(GlobalOptimManager.Instance, opt.Manager);
    }

    private static void Step(Optimizer8bit opt, params Parameter[] ps)
    {
        foreach (var p in ps)
        {
            using var g = randn(p.shape).mul(0.01f);
            TestGrads.Set(p, g);
        }

        opt.step();
    }

    private static void Step(Optimizer8bit opt, Tensor g, Parameter p)
    {
        TestGrads.Set(p, g);
        opt.step();
    }
}
