using BnbDist.Optim8bit.Kernels;
using BnbDist.Tests;

namespace BnbDist.Optim8bit.Tests.Kernels;

/// <summary>The 1-state 8-bit blockwise updates (SGD momentum, Lion, RMSprop) replay bitsandbytes' golden trajectories.</summary>
public class OneState8bitBlockwiseTests
{
    [Theory]
    [InlineData("SGD8bit", "Momentum", 0.9f, 0f, 0f, 1e-2f, 0f)]
    [InlineData("Lion8bit", "Lion", 0.9f, 0.99f, 0f, 1e-4f, 0.01f)]
    [InlineData("RMSprop8bit", "RmsProp", 0.99f, 0f, 1e-8f, 1e-3f, 0f)] // the golden run used lr 1e-3 (its README), not RMSprop's 1e-2 default
    public void ReplayingBitsandbytesGradientsReproducesItsStatesAndParameters(string name, string ruleName, float beta1, float beta2,
        float eps, float lr, float weightDecay)
    {
        var rule = Enum.Parse<UpdateRule>(ruleName);
        var p = Floats($"opt.{name}.p_big.init");
        var n = p.Length;
        var s1 = new byte[n];
        var a1 = new float[(n + 255) / 256];
        var q1 = CodeBooks.CreateDynamicMap(true);
        Assert.Equal(Floats($"opt.{name}.final_state_big.qmap1"), q1);
        for (var step = 1; step <= 12; step++)
        {
            OneState8bitBlockwise.Step(rule, p, Floats($"opt.{name}.grad_big.{step - 1}"), s1, a1, q1, beta1, beta2, eps, lr, weightDecay, step);
            var expected = Floats($"opt.{name}.p_big.{step - 1}");
            var rel = Trajectory.RelativeL2(p, expected);
            Assert.True(rel < 1e-5, $"step {step}: ||dp||/||p|| = {rel:E2}");
        }

        var e1 = Golden.Get($"opt.{name}.final_state_big.state1").data<byte>().ToArray();
        var same = e1.Zip(s1).Count(z => z.First == z.Second);
        Assert.True(same >= 0.999 * n, $"{n - same} of {n} state bytes differ");
        var ea = Floats($"opt.{name}.final_state_big.absmax1");
        for (var b = 0; b < ea.Length; b++)
        {
            Assert.True(Math.Abs(a1[b] - ea[b]) <= 1e-6 * ea[b], $"absmax1[{b}]: {a1[b]} vs {ea[b]}");
        }
    }

    private static float[] Floats(string name) => Golden.Get(name).data<float>().ToArray();
}
