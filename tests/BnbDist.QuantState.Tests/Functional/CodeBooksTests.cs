using BnbDist.Backends;
using TorchSharp;

namespace BnbDist.Tests;

public class CodeBooksTests
{
    [Theory]
    [InlineData(true, "code.dynamic_signed")]
    [InlineData(false, "code.dynamic_unsigned")]
    public void DynamicMapIsBitIdenticalToBitsandbytes(bool signed, string golden)
    {
        // Proves create_dynamic_map, including torch's single-rounding linspace, reproduces all 256 bit patterns.
        var expected = Golden.Get(golden).data<float>().ToArray();
        var actual = CodeBooks.CreateDynamicMap(signed);
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
    }

    [Theory]
    [InlineData(QuantType.NF4, "code.nf4")]
    [InlineData(QuantType.FP4, "code.fp4")]
    public void FourBitCodeBooksAreBitIdenticalToBitsandbytes(QuantType type, string golden)
    {
        var expected = Golden.Get(golden).data<float>().ToArray();
        var actual = CodeBooks.FourBit(type).data<float>().ToArray();
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void FP4DequantTableDiffersFromSavedCodeBookOnlyInTheSignOfZero()
    {
        // bitsandbytes' CUDA LUT yields -0.0 for code 8 while its saved quant_map holds +0.0.
        var saved = FourBitTables.FP4.ToArray();
        var deq = FourBitTables.FP4Dequant.ToArray();
        for (var i = 0; i < 16; i++)
        {
            Assert.Equal(saved[i], deq[i]);
        }

        Assert.False(float.IsNegative(saved[8]));
        Assert.True(float.IsNegative(deq[8]));
    }

    [Fact]
    public void CachedCodeBooksSurviveTheFirstCallersDisposeScope()
    {
        // The first use of a cached code book may happen inside a user's DisposeScope; the cache must not die with it.
        using (var scope = torch.NewDisposeScope())
        {
            using var x = torch.randn(1000);
            Functional.QuantizeFP4(x);
            Functional.QuantizeBlockwise(x, blocksize: 64);
        }

        using var y = torch.randn(1000);
        var (q, s) = Functional.QuantizeBlockwise(y, blocksize: 64);
        Assert.Equal(256, s.Code.numel());
        Assert.Equal(16, Functional.QuantizeFP4(y).State.Code.numel());
    }

    [Fact]
    public void DisposingAStatesSharedCodeBookDoesNotBreakLaterCalls()
    {
        // QuantStates share the cached code book; a caller that disposes it must not poison the cache.
        using var x = torch.randn(1000);
        var (_, s) = Functional.QuantizeBlockwise(x, blocksize: 64);
        s.Code.Dispose();
        var (q, s2) = Functional.QuantizeBlockwise(x, blocksize: 64);
        Assert.False(s2.Code.IsInvalid);
        Assert.Equal(1000, Functional.DequantizeBlockwise(q, s2).numel());
        using var mine = CodeBooks.DynamicMap();
        Assert.False(ReferenceEquals(mine, s2.Code));
    }

    [Fact]
    public void LinspaceMatchesTorchSingleRounding()
    {
        // Spot check against torch.linspace(0.1, 1, 65, dtype=float32) endpoints and symmetry rule.
        var l = CodeBooks.Linspace(0.1f, 1f, 65);
        Assert.Equal(0.1f, l[0]);
        Assert.Equal(1f, l[^1]);
        Assert.All(l.Zip(l.Skip(1)), p => Assert.True(p.First < p.Second));
    }
}
