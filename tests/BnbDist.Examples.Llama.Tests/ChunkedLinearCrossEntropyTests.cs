using BnbDist.Examples.Llama.Training;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>The chunked head + cross-entropy equals the plain one: logits, then <see cref="CausalLm.Loss"/>.</summary>
public sealed class ChunkedLinearCrossEntropyTests
{
    /// <summary>Loss and the hidden states' gradient (scaled by a non-unit upstream gradient) match in fp32, for chunks that do not divide the rows.</summary>
    [Theory]
    [InlineData(7)]
    [InlineData(512)]
    public void LossAndHiddenGradientMatchThePlainComputation(int chunk)
    {
        manual_seed(21);
        using var weight = randn(50, 16);
        using var ids = randint(0, 50, [3, 9], dtype: ScalarType.Int64);
        using var h1 = randn(3, 9, 16).requires_grad_(true);
        using var h2 = h1.detach().clone().requires_grad_(true);

        using var plain = CausalLm.Loss(nn.functional.linear(h1, weight), ids);
        using var chunked = ChunkedLinearCrossEntropy.Loss(h2, weight, ids, chunk);
        (plain * 3).backward();
        (chunked * 3).backward();

        Assert.Equal(plain.item<float>(), chunked.item<float>(), 5);
        Assert.True(h1.grad!.abs().max().item<float>() > 0);
        Assert.True(h1.grad!.allclose(h2.grad!, rtol: 1e-5, atol: 1e-7), $"max diff {(h1.grad! - h2.grad!).abs().max().item<float>()}");
    }

    /// <summary>A trainable head would silently get no gradient: refused.</summary>
    [Fact]
    public void RefusesATrainableHead()
    {
        using var weight = randn(50, 16).requires_grad_(true);
        using var h = randn(1, 4, 16);
        using var ids = randint(0, 50, [1, 4], dtype: ScalarType.Int64);
        var ex = Assert.Throws<ArgumentException>(() => ChunkedLinearCrossEntropy.Loss(h, weight, ids));
        Assert.Equal("headWeight", ex.ParamName);
    }
}
