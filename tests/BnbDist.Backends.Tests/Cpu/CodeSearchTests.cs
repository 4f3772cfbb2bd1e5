using BnbDist.Backends.Cpu;

namespace BnbDist.Backends.Tests.Cpu;

/// <summary>The bucketed fast search equals the reference midpoint rule for any ascending code book.</summary>
public class CodeSearchTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void FastSearchEqualsReferenceOnRandomCodeBooksAndValues(int seed)
    {
        var rng = new Random(seed);
        var code = Enumerable.Range(0, 256).Select(_ => (float)((rng.NextDouble() * 2) - 1) * MathF.Pow(10, -rng.Next(0, 6))).ToArray();
        code[0] = -1f;
        code[255] = 1f;
        Array.Sort(code);
        CheckAgainstReference(code, rng);
    }

    [Fact]
    public void FastSearchEqualsReferenceOnBitsandbytesMapsIncludingEveryMidpoint()
    {
        var rng = new Random(9);
        foreach (var code in new[] { SignedDynamicMap(), UnsignedLike() })
        {
            CheckAgainstReference(code, rng);
            var s = new CodeSearch(code);
            var mids = new float[255];
            for (var j = 0; j < 255; j++)
            {
                mids[j] = (code[j] + code[j + 1]) * 0.5f;
            }

            foreach (var m in mids)
            {
                foreach (var x in new[] { m, MathF.BitIncrement(m), MathF.BitDecrement(m) })
                {
                    Assert.Equal(CodeSearch.ReferenceIndex(x, mids), s.Index(x));
                }
            }
        }
    }

    [Fact]
    public void ExactMidpointGoesToTheEvenIndex()
    {
        var code = Enumerable.Range(0, 256).Select(i => i / 255f).ToArray();
        var s = new CodeSearch(code);
        for (var j = 0; j < 255; j++)
        {
            var mid = (code[j] + code[j + 1]) * 0.5f;
            Assert.Equal(j % 2 == 0 ? j : j + 1, s.Index(mid));
        }
    }

    [Fact]
    public void NaNGoesToIndexZeroAndOutOfRangeClamps()
    {
        var code = SignedDynamicMap();
        var s = new CodeSearch(code);
        Assert.Equal(0, s.Index(float.NaN));
        Assert.Equal(255, s.Index(5f));
        Assert.Equal(255, s.Index(float.PositiveInfinity));
        Assert.Equal(0, s.Index(float.NegativeInfinity));
        Assert.Equal(127, s.Index(0f));
        Assert.Equal(127, s.Index(-0f));
    }

    private static void CheckAgainstReference(float[] code, Random rng)
    {
        var s = new CodeSearch(code);
        var mids = new float[255];
        for (var j = 0; j < 255; j++)
        {
            mids[j] = (code[j] + code[j + 1]) * 0.5f;
        }

        for (var i = 0; i < 200_000; i++)
        {
            var x = (rng.Next(3)) switch
            {
                0 => (float)((rng.NextDouble() * 2.2) - 1.1),
                1 => (float)((rng.NextDouble() * 2) - 1) * MathF.Pow(10, -rng.Next(0, 9)),
                _ => BitConverter.Int32BitsToSingle(rng.Next()) * (rng.Next(2) == 0 ? 1 : -1),
            };
            Assert.Equal(CodeSearch.ReferenceIndex(x, mids), s.Index(x));
        }
    }

    // Shape-alike of the signed dynamic map (decades of evenly spaced values), built independently of BnbDist.QuantState.
    private static float[] SignedDynamicMap()
    {
        var data = new List<float> { 0f, 1f };
        for (var i = 0; i < 7; i++)
        {
            var items = (1 << i) + 1;
            for (var k = 0; k + 1 < items; k++)
            {
                var a = 0.1f + (0.9f * k / (items - 1));
                var b = 0.1f + (0.9f * (k + 1) / (items - 1));
                var v = MathF.Pow(10, i - 6) * (a + b) / 2;
                data.Add(v);
                data.Add(-v);
            }
        }

        data.Sort();
        return [.. data];
    }

    private static float[] UnsignedLike()
    {
        var data = new List<float> { 0f, 1f };
        for (var i = 0; i < 7; i++)
        {
            var items = (1 << (i + 1)) + 1;
            for (var k = 0; k + 1 < items; k++)
            {
                var a = 0.1f + (0.9f * k / (items - 1));
                var b = 0.1f + (0.9f * (k + 1) / (items - 1));
                data.Add(MathF.Pow(10, i - 6) * (a + b) / 2);
            }
        }

        data.Sort();
        return [.. data];
    }
}
