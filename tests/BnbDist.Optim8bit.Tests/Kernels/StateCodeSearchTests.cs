using BnbDist.Optim8bit.Kernels;

namespace BnbDist.Optim8bit.Tests.Kernels;

/// <summary>The bucketed code search gives exactly the binary search's answer (upper ties, NaN → 0) on both dynamic maps and on an arbitrary code.</summary>
public class StateCodeSearchTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void BucketedSearchEqualsTheBinarySearchEverywhere(int which)
    {
        var rng = new Random(17);
        var code = which switch
        {
            0 => CodeBooks.CreateDynamicMap(true),
            1 => CodeBooks.CreateDynamicMap(false),
            _ => Enumerable.Range(0, 256).Select(_ => (float)((rng.NextDouble() * 2) - 1) * 1e-3f).Order().ToArray(), // many midpoints per bucket: the fallback
        };
        var search = StateCodeSearch.For(code);
        var mids = new float[255];
        StateQuantizer.Midpoints(code, mids);

        var probes = new List<float> { 0f, -0f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon, 2f, -2f, 1f, -1f, float.MaxValue };
        foreach (var m in mids)
        {
            // Each midpoint (the tie goes up), its neighbours, and its negation.
            probes.AddRange([m, MathF.BitDecrement(m), MathF.BitIncrement(m), -m]);
        }

        for (var i = 0; i < 200_000; i++)
        {
            var magnitude = MathF.Pow(2f, (float)((rng.NextDouble() * 60) - 50));
            probes.Add(rng.Next(2) == 0 ? magnitude : -magnitude);
            probes.Add(BitConverter.Int32BitsToSingle(rng.Next()));
        }

        foreach (var x in probes)
        {
            Assert.True(StateQuantizer.NearestUpper(x, mids) == search.Index(x), $"x = {x:R} (0x{BitConverter.SingleToInt32Bits(x):x8})");
        }
    }
}
