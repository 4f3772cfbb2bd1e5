using BnbDist.Optim8bit.Kernels;
using BnbDist.Tests;

namespace BnbDist.Optim8bit.Tests.Kernels;

/// <summary>32-bit Adam: bitsandbytes' Adam32 trajectory, and the small (&lt; 4096 elements) parameters of its 8-bit Adams.</summary>
public class TwoState32bitTests
{
    [Theory]
    [InlineData("Adam32", "big", 0f)]
    [InlineData("Adam32", "small", 0f)]
    [InlineData("Adam8bit", "small", 0f)]
    [InlineData("AdamW8bit", "small", 0.01f)]
    public void ReplayingBitsandbytesGradientsReproducesItsParameters(string name, string which, float weightDecay)
    {
        var p = Floats($"opt.{name}.p_{which}.init");
        var m = new float[p.Length];
        var v = new float[p.Length];
        for (var step = 1; step <= 12; step++)
        {
            TwoState32bit.Step(p, Floats($"opt.{name}.grad_{which}.{step - 1}"), m, v, 0.9f, 0.999f, 1e-8f, 1e-3f, weightDecay, step);
            var expected = Floats($"opt.{name}.p_{which}.{step - 1}");
            var rel = Trajectory.RelativeL2(p, expected);
            // The issue asks for 1e-5; measured at most 1.02e-6 (bitsandbytes' fast-math pow/sqrt/division, accumulating over 12 steps).
            Assert.True(rel < 2e-6, $"step {step}: ||dp||/||p|| = {rel:E2}");
        }

        if (which == "big")
        {
            var e1 = Floats($"opt.{name}.final_state_big.state1");
            var e2 = Floats($"opt.{name}.final_state_big.state2");
            for (var i = 0; i < p.Length; i++)
            {
                Assert.True(Math.Abs(m[i] - e1[i]) <= 1e-6 * Math.Abs(e1[i]) + 1e-12, $"m[{i}]");
                Assert.True(Math.Abs(v[i] - e2[i]) <= 1e-6 * Math.Abs(e2[i]) + 1e-15, $"v[{i}]");
            }
        }
    }

    private static float[] Floats(string name) => Golden.Get(name).data<float>().ToArray();
}
