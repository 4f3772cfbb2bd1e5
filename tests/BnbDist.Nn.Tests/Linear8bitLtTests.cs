using BnbDist.Tests;
using static TorchSharp.torch;

namespace BnbDist.Nn.Tests;

/// <summary>Linear8bitLt (LLM.int8): bitsandbytes checkpoint interop, outlier path, gradients, typed errors.</summary>
public class Linear8bitLtTests
{
    [Fact]
    public void GoldenLinear8bitLtReproducesBitsandbytesForwardToOneFp16Ulp()
    {
        var layer = LoadGolden();
        var x = Golden.Get("lin8.x");
        var expected = Golden.Get("lin8.y");
        using var y = layer.forward(x);
        Assert.Equal(ScalarType.Float16, y.dtype);

        // The int8 product and its dequantization (bitsandbytes' fma formula) are exact on both sides. What differs is
        // the fp16 outlier matmul and the cancellation after it: tolerance one fp16 rounding (2^-11) of the absolute
        // dot product |x|·|W|ᵀ + |b|, and at least 98.5 % of outputs bit-identical (measured: 98.9 %).
        using var w = layer.DenseWeight(ScalarType.Float64);
        using var scale = (x.abs().to_type(ScalarType.Float64).matmul(w.abs().t()) + layer.Bias!.abs().to_type(ScalarType.Float64)) * Math.Pow(2, -11);
        using var ours = y.to_type(ScalarType.Float64);
        using var bnb = expected.to_type(ScalarType.Float64);
        var worst = ((ours - bnb).abs() / scale).max().item<double>();
        Assert.True(worst <= 1.0, $"max |ours - bnb| is {worst:F3} of the bound");
        var identical = ours.eq(bnb).to_type(ScalarType.Float64).mean().item<double>();
        Assert.True(identical >= 0.985, $"{identical:P2} identical");
    }

    [Fact]
    public void OutlierColumnsGoThroughTheFloatPath()
    {
        // With outliers far above the threshold, the int8-only result would lose them; the mixed path keeps them.
        manual_seed(2);
        var layer = new Linear8bitLt(64, 32, true, hasFp16Weights: false, threshold: 6f);
        layer.Quantize();
        using var x = randn(8, 64);
        x[.., 5] = tensor(50f);
        using var y = layer.forward(x).to_type(ScalarType.Float64);
        using var exact = x.to_type(ScalarType.Float64).matmul(layer.DenseWeight(ScalarType.Float64).t()) + layer.Bias!.to_type(ScalarType.Float64);
        var rel = ((y - exact).norm() / exact.norm()).item<double>();
        Assert.True(rel < 0.01, $"relative error {rel}");
    }

    [Fact]
    public void InputAndBiasGradientsMatchTheDequantizedWeightAndTheWeightGetsNone()
    {
        manual_seed(4);
        var layer = new Linear8bitLt(48, 24, true, hasFp16Weights: false, threshold: 0f);
        layer.Quantize();
        using var x = randn(6, 48, requires_grad: true);
        using var r = randn(6, 24);
        (layer.forward(x) * r).sum().backward();
        using var gx = r.to_type(ScalarType.Float64).matmul(layer.DenseWeight(ScalarType.Float64));
        var rel = ((x.grad!.to_type(ScalarType.Float64) - gx).norm() / gx.norm()).item<double>();
        Assert.True(rel < 1e-6, $"grad x rel err {rel}");
        Assert.True(layer.Bias!.grad!.allclose(r.sum(0L), 1e-5, 1e-6));
        Assert.Null(layer.Weight.grad);
        Assert.Equal(ScalarType.Int8, layer.Weight.dtype);
    }

    [Fact]
    public void Fp16WeightsTrain()
    {
        manual_seed(5);
        var layer = new Linear8bitLt(16, 8, true, hasFp16Weights: true, threshold: 0f);
        using var x = randn(4, 16);
        (layer.forward(x) * randn(4, 8)).sum().backward();
        Assert.NotNull(layer.Weight.grad);
        Assert.Equal(ScalarType.Float32, layer.Weight.dtype);
    }

    [Fact]
    public void BadStateDictsAreTypedErrorsNamingTheKey()
    {
        var sd = GoldenStateDict();
        sd.Remove("SCB");
        var layer = new Linear8bitLt(320, 256, true, hasFp16Weights: false, threshold: 6f);
        Assert.ThrowsAny<Exception>(() => layer.load_state_dict(sd));

        sd = GoldenStateDict();
        sd["SCB"] = zeros(3);
        Assert.Equal("SCB", Assert.Throws<StateDictException>(() => layer.load_state_dict(sd)).Key);

        sd = GoldenStateDict();
        sd["weight_format"] = tensor((byte)2);
        Assert.Equal("weight_format", Assert.Throws<StateDictException>(() => layer.load_state_dict(sd)).Key);

        sd = GoldenStateDict();
        sd["weight"] = zeros(256, 320, ScalarType.Float32);
        Assert.Equal("weight", Assert.Throws<StateDictException>(() => layer.load_state_dict(sd)).Key);
    }

    internal static Linear8bitLt LoadGolden()
    {
        var layer = new Linear8bitLt(320, 256, true, hasFp16Weights: false, threshold: 6f);
        layer.load_state_dict(GoldenStateDict());
        return layer;
    }

    private static Dictionary<string, Tensor> GoldenStateDict() =>
        new[] { "SCB", "bias", "weight", "weight_format" }.ToDictionary(k => k, k => Golden.Get("lin8." + k));
}
