using BnbDist.Backends.Cpu;
using static TorchSharp.torch;

namespace BnbDist.Backends.Tests.Cpu;

/// <summary>The CPU backend's dtype conversions agree with libtorch's (round to nearest even).</summary>
public class ElementIOTests
{
    [Fact]
    public void BFloat16RoundingMatchesTorch()
    {
        var rng = new Random(1);
        var values = Enumerable.Range(0, 100_000).Select(_ => BitConverter.Int32BitsToSingle(rng.Next())).Where(f => !float.IsNaN(f)).ToArray();
        using var t = tensor(values).to_type(ScalarType.BFloat16);
        var viaTorch = t.to_type(ScalarType.Float32).data<float>().ToArray();
        for (var i = 0; i < values.Length; i++)
        {
            var ours = BitConverter.Int32BitsToSingle(ElementIO.ToBFloat16(values[i]) << 16);
            Assert.Equal(BitConverter.SingleToInt32Bits(viaTorch[i]), BitConverter.SingleToInt32Bits(ours));
        }
    }

    [Fact]
    public void DeterministicSumFollowsTheChunkedTreeOrder()
    {
        var rng = new Random(2);
        var v = Enumerable.Range(0, 3000).Select(_ => (float)rng.NextDouble() * 1e6f).ToArray();
        double expected = 0;
        for (var c = 0; c < v.Length; c += 1024)
        {
            var s = new double[1024];
            for (var i = 0; i < 1024; i++)
            {
                s[i] = c + i < v.Length ? v[c + i] : 0;
            }

            for (var stride = 512; stride >= 1; stride /= 2)
            {
                for (var i = 0; i < stride; i++)
                {
                    s[i] += s[i + stride];
                }
            }

            expected += s[0];
        }

        unsafe
        {
            fixed (float* p = v)
            {
                Assert.Equal(expected, CpuQuantBackend.DeterministicSum(p, v.Length));
            }
        }
    }
}
