using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Optimizers;

/// <summary>Bad input is refused with an ArgumentException naming what is wrong, before any state changes.</summary>
public class OptimizerInputTests
{
    [Fact]
    public void SparseGradientsAreRefused()
    {
        using var emb = nn.Embedding(100, 64, sparse: true);
        using var opt = new Adam8bit(emb.parameters().ToList(), manager: new());
        using (var idx = tensor(new long[] { 1, 5, 7 }))
        {
            emb.call(idx).sum().backward();
        }

        var e = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.Contains("sparse", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, opt.States[0].Step);
    }

    [Fact]
    public void AGroupOnTwoDevicesIsRefused()
    {
        using var cpu = TestGrads.Param(randn(10));
        using var meta = new TorchSharp.Modules.Parameter(empty(10, device: new Device(DeviceType.META)));
        var e = Assert.Throws<ArgumentException>(() => new Adam8bit([cpu, meta], manager: new()));
        Assert.Contains("mixes devices", e.Message, StringComparison.Ordinal);
        Assert.Equal("parameters", e.ParamName);
    }

    [Theory]
    [InlineData("lr", double.NaN)]
    [InlineData("lr", double.PositiveInfinity)]
    [InlineData("lr", -1e-3)]
    [InlineData("beta1", double.NaN)]
    [InlineData("beta2", double.PositiveInfinity)]
    [InlineData("beta2", 1.0)]
    [InlineData("eps", double.NaN)]
    [InlineData("weightDecay", double.NegativeInfinity)]
    public void NonFiniteOrOutOfRangeHyperparametersAreRefusedByName(string name, double value)
    {
        using var p = TestGrads.Param(randn(10));
        var e = Assert.Throws<ArgumentException>(() => name switch
        {
            "lr" => new AdamW8bit([p], lr: value, manager: new()),
            "beta1" => new AdamW8bit([p], beta1: value, manager: new()),
            "beta2" => new AdamW8bit([p], beta2: value, manager: new()),
            "eps" => new AdamW8bit([p], eps: value, manager: new()),
            _ => (Optimizer8bit)new AdamW8bit([p], weightDecay: value, manager: new()),
        });
        Assert.Equal(name, e.ParamName);
    }

    [Fact]
    public void AGroupHyperparameterMadeNonFiniteLaterIsRefusedAtTheStep()
    {
        using var p = TestGrads.Param(randn(10));
        using var opt = new AdamW8bit([new Optimizer8bitParamGroup([p]), new Optimizer8bitParamGroup([])], manager: new());
        opt.Groups[0].Betas = (0.9, double.NaN);
        TestGrads.Set(p, ones(10));
        var e = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.Equal("beta2", e.ParamName);
        Assert.Contains("group 0", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OptionsThatBitsandbytesSilentlyIgnoresAreRefused()
    {
        using var p = TestGrads.Param(randn(10));
        Assert.Equal("nesterov", Assert.Throws<ArgumentException>(() => new SGD8bit([p], lr: 0.1, momentum: 0.9, nesterov: true)).ParamName);
        Assert.Equal("dampening", Assert.Throws<ArgumentException>(() => new SGD8bit([p], lr: 0.1, momentum: 0.9, dampening: 0.1)).ParamName);
        Assert.Equal("momentum", Assert.Throws<ArgumentException>(() => new SGD8bit([p], lr: 0.1, momentum: 0)).ParamName);
        Assert.Equal("momentum", Assert.Throws<ArgumentException>(() => new RMSprop8bit([p], momentum: 0.9)).ParamName);
        Assert.Equal("centered", Assert.Throws<ArgumentException>(() => new RMSprop8bit([p], centered: true)).ParamName);
        Assert.Equal("optimBits", Assert.Throws<ArgumentException>(() => new Adam([p], optimBits: 16)).ParamName);
    }

    [Fact]
    public void NonFloatAndDuplicatedParametersAreRefused()
    {
        using var ints = new TorchSharp.Modules.Parameter(zeros(10, ScalarType.Int32), requires_grad: false);
        Assert.Contains("dtype", Assert.Throws<ArgumentException>(() => new Adam8bit([ints], manager: new())).Message, StringComparison.Ordinal);
        using var p = TestGrads.Param(randn(10));
        Assert.Contains("more than one", Assert.Throws<ArgumentException>(
            () => new Adam8bit([new Optimizer8bitParamGroup([p]), new Optimizer8bitParamGroup([p])], manager: new())).Message, StringComparison.Ordinal);
        using var opt = new Adam8bit([p], manager: new());
        using var stranger = TestGrads.Param(randn(10));
        Assert.Throws<ArgumentException>(() => opt.StateOf(stranger));
    }
}
