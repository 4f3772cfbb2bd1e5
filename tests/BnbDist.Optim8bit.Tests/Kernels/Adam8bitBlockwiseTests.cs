using BnbDist.Optim8bit.Kernels;
using BnbDist.Tests;

namespace BnbDist.Optim8bit.Tests.Kernels;

/// <summary>The 8-bit blockwise Adam step replays bitsandbytes' recorded 12-step trajectories (golden opt.*).</summary>
public class Adam8bitBlockwiseTests
{
    [Theory]
    [InlineData("Adam8bit", 0f)]
    [InlineData("AdamW8bit", 0.01f)]
    [InlineData("PagedAdamW8bit", 0.01f)]
    public void ReplayingBitsandbytesGradientsReproducesItsStatesAndParameters(string name, float weightDecay)
    {
        var p = Floats($"opt.{name}.p_big.init");
        var n = p.Length;
        var blocks = (n + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
        var s1 = new byte[n];
        var s2 = new byte[n];
        var a1 = new float[blocks];
        var a2 = new float[blocks];
        var q1 = CodeBooks.CreateDynamicMap(true);
        var q2 = CodeBooks.CreateDynamicMap(false);
        Assert.Equal(Floats($"opt.{name}.final_state_big.qmap1"), q1);
        Assert.Equal(Floats($"opt.{name}.final_state_big.qmap2"), q2);

        for (var step = 1; step <= 12; step++)
        {
            Adam8bitBlockwise.Step(p, Floats($"opt.{name}.grad_big.{step - 1}"), s1, s2, a1, a2, q1, q2,
                0.9f, 0.999f, 1e-8f, 1e-3f, weightDecay, step);

            // Parameters: relative L2 distance to bitsandbytes after every step (its kernel uses fast-math pow, sqrt
            // and division, so individual elements can differ by a few ulp, and by more where one of its moments
            // landed on the other side of a quantization midpoint).
            var expected = Floats($"opt.{name}.p_big.{step - 1}");
            var rel = Trajectory.RelativeL2(p, expected);
            Assert.True(rel < 1e-5, $"step {step}: ||dp||/||p|| = {rel:E2}");
        }

        // Final 8-bit states: identical bytes; absmax within 1e-6 relative.
        Assert.Equal(Bytes($"opt.{name}.final_state_big.state1"), s1);
        Assert.Equal(Bytes($"opt.{name}.final_state_big.state2"), s2);
        var e1 = Floats($"opt.{name}.final_state_big.absmax1");
        var e2 = Floats($"opt.{name}.final_state_big.absmax2");
        for (var b = 0; b < blocks; b++)
        {
            Assert.True(Math.Abs(a1[b] - e1[b]) <= 1e-6 * e1[b], $"absmax1[{b}]");
            Assert.True(Math.Abs(a2[b] - e2[b]) <= 1e-6 * e2[b], $"absmax2[{b}]");
        }
    }

    [Fact]
    public void NonFiniteGradientsZeroTheMomentsAndLeaveTheParameter()
    {
        var p = new float[] { 1f, 2f, 3f };
        var g = new float[] { float.NaN, float.PositiveInfinity, 0.5f };
        var s1 = new byte[3];
        var s2 = new byte[3];
        var a1 = new float[1];
        var a2 = new float[1];
        var q1 = CodeBooks.CreateDynamicMap(true);
        var q2 = CodeBooks.CreateDynamicMap(false);
        Adam8bitBlockwise.Step(p, g, s1, s2, a1, a2, q1, q2, 0.9f, 0.999f, 1e-8f, 1e-3f, 0f, 1);
        Assert.Equal(1f, p[0]);
        Assert.Equal(2f, p[1]);
        Assert.True(p[2] < 3f);
        Assert.All(new[] { a1[0], a2[0] }, a => Assert.True(float.IsFinite(a) && a > 0));
        Assert.Equal(0f, q1[s1[0]] * a1[0], 6);
    }

    private static float[] Floats(string name) => Golden.Get(name).data<float>().ToArray();

    private static byte[] Bytes(string name) => Golden.Get(name).data<byte>().ToArray();
}
