using BnbDist.Backends;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>
/// Random shapes and values, including awkward sizes (1, block−1, block, block+1, odd) and special values (zero
/// blocks, −0.0, 1e-30, denormals, ±1e30, NaN): the backends agree with the plain reference bit for bit, round trips
/// stay within bitsandbytes' own error bounds, and CPU equals CUDA where a GPU exists.
/// NaN handling: NaN is ignored by absmax, encodes as code 0 (8-bit), 0 (NF4/FP4), and dequantizes to that code's value.
/// </summary>
public class PropertyTests
{
    private static readonly int[] Blocksizes = [32, 64, 128, 256, 512, 1024, 2048, 4096];

    public static TheoryData<int> Seeds() => [1, 2, 3, 4, 5, 6];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Blockwise8MatchesReferenceOnAwkwardSizesAndSpecialValues(int seed)
    {
        var rng = new Random(seed);
        foreach (var bs in Blocksizes)
        {
            foreach (var n in new[] { 1, bs - 1, bs, bs + 1, (3 * bs) + 7, rng.Next(1, 20000) })
            {
                var x = RandomValues(rng, n);
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
                {
                    using var t = tensor(x).to_type(dtype);
                    var xs = t.to_type(ScalarType.Float32).data<float>().ToArray();
                    var (q, state) = Functional.QuantizeBlockwise(t, blocksize: bs);
                    var (codes, absmax) = ReferenceQuant.Blockwise8(xs, CodeBooks.CreateDynamicMap(), bs);
                    Assert.Equal(absmax.Select(BitConverter.SingleToInt32Bits), state.Absmax.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));
                    Assert.Equal(codes, q.data<byte>().ToArray());
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void FourBitMatchesReferenceOnAwkwardSizesAndSpecialValues(int seed)
    {
        var rng = new Random(seed);
        foreach (var bs in Blocksizes)
        {
            foreach (var n in new[] { 1, bs - 1, bs, bs + 1, (2 * bs) + 3, rng.Next(1, 20000) })
            {
                var x = RandomValues(rng, n);
                foreach (var type in new[] { QuantType.NF4, QuantType.FP4 })
                {
                    using var t = tensor(x).to_type(ScalarType.BFloat16);
                    var xs = t.to_type(ScalarType.Float32).data<float>().ToArray();
                    var (packed, state) = Functional.Quantize4Bit(t, bs, false, type);
                    var (expected, absmax) = ReferenceQuant.FourBit(xs, type, bs);
                    Assert.Equal(absmax.Select(BitConverter.SingleToInt32Bits), state.Absmax.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));
                    Assert.Equal(expected, packed.data<byte>().ToArray());

                    // Dequant: table[code]·absmax, exactly.
                    var deq = Functional.Dequantize4Bit(packed, state).to_type(ScalarType.Float32).data<float>().ToArray();
                    var table = FourBitTables.DequantTable(type);
                    for (var i = 0; i < n; i++)
                    {
                        var c = i % 2 == 0 ? expected[i / 2] >> 4 : expected[i / 2] & 0xF;
                        var want = (float)(BFloat16)(table[c] * absmax[i / bs]);
                        Assert.Equal(BitConverter.SingleToInt32Bits(want), BitConverter.SingleToInt32Bits(deq[i]));
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(64)]
    [InlineData(256)]
    [InlineData(4096)]
    public void Blockwise8ErrorIsWithinBitsandbytesBounds(int bs)
    {
        // bitsandbytes test_dynamic_blockwise_quantization: randn 1024x1024, mean abs err < 0.011, mean rel err < 0.018.
        manual_seed(bs);
        using var a = randn(1024, 1024);
        var (q, state) = Functional.QuantizeBlockwise(a, blocksize: bs);
        using var back = Functional.DequantizeBlockwise(q, state);
        using var diff = (a - back).abs();
        Assert.True(diff.mean().item<float>() < 0.011f);
        Assert.True((diff / (a.abs() + 1e-8f)).mean().item<float>() < 0.018f);
    }

    [Theory]
    [InlineData(QuantType.NF4, 64, 0.072798f, 0.203339f)]
    [InlineData(QuantType.NF4, 256, 0.080337f, 0.226105f)]
    [InlineData(QuantType.NF4, 4096, 0.092547f, 0.262473f)]
    [InlineData(QuantType.FP4, 64, 0.096543f, 0.260125f)]
    [InlineData(QuantType.FP4, 256, 0.108684f, 0.289831f)]
    [InlineData(QuantType.FP4, 4096, 0.129536f, 0.337169f)]
    public void FourBitErrorIsWithinBitsandbytesBounds(QuantType type, int bs, float meanAbs, float meanRel)
    {
        // bitsandbytes test_4bit_quant: limit = reference mean + 7σ (σ ≤ 0.0012 in its table).
        manual_seed(bs + (int)type);
        using var a = randn(1024, 1024);
        foreach (var dq in new[] { false, true })
        {
            var (p, state) = Functional.Quantize4Bit(a, bs, dq, type);
            using var back = Functional.Dequantize4Bit(p, state);
            using var diff = (a - back).abs();
            Assert.True(diff.mean().item<float>() < meanAbs + (7 * 0.0012f), $"abs {diff.mean().item<float>()}");
            Assert.True((diff / (a.abs() + 1e-8f)).mean().item<float>() < meanRel + (7 * 0.0012f));
        }
    }

    [Fact]
    public void CallerSuppliedOutputsAreFilledAndNeverDisposed()
    {
        using var x = randn(5000);
        using var absmax = empty(QuantBackendBase.Blocks(5000, 64));
        using var packed = empty([2500, 1], ScalarType.Byte);
        var (p, s) = Functional.Quantize4Bit(x, 64, compressStatistics: true, QuantType.NF4, absmax, packed);
        Assert.Same(packed, p);
        var (_, plain) = Functional.Quantize4Bit(x, 64, false, QuantType.NF4);
        Assert.True(absmax.equal(plain.Absmax).all().item<bool>()); // still alive, holding the f32 absmax
        using var q8 = empty(5000, ScalarType.Byte);
        using var a8 = empty(QuantBackendBase.Blocks(5000, 256));
        var (q, s8) = Functional.QuantizeBlockwise(x, blocksize: 256, nested: true, absmax: a8, @out: q8);
        Assert.Same(q8, q);
        Assert.Equal(s8.State2!.Absmax.numel(), QuantBackendBase.Blocks(a8.numel(), 256));
        Assert.True(a8.abs().max().item<float>() > 0);
    }

    [Fact]
    public void DoubleQuantOffsetIsTheDeterministicMean()
    {
        var rng = new Random(7);
        var v = Enumerable.Range(0, 5000).Select(_ => (float)rng.NextDouble()).ToArray();
        using var t = tensor(v);
        var m = Functional.DeterministicMean(t).item<float>();
        Assert.Equal((float)v.Select(x => (double)x).Sum() * (1f / v.Length), m);
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void CpuEqualsCudaBitForBit(int seed)
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        var rng = new Random(seed);
        foreach (var bs in Blocksizes)
        {
            foreach (var n in new[] { 1, bs - 1, bs + 1, rng.Next(1, 300000) })
            {
                var x = RandomValues(rng, n);
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
                {
                    using var t = tensor(x).to_type(dtype);
                    using var g = t.to(TestDevices.Cuda);
                    var (qc, sc) = Functional.QuantizeBlockwise(t, blocksize: bs, nested: true);
                    var (qg, sg) = Functional.QuantizeBlockwise(g, blocksize: bs, nested: true);
                    Assert.Equal(qc.data<byte>().ToArray(), qg.cpu().data<byte>().ToArray());
                    Assert.Equal(sc.Absmax.data<byte>().ToArray(), sg.Absmax.cpu().data<byte>().ToArray());
                    GoldenBlockwise8BitTests.AssertBitEqual(Functional.DequantizeBlockwise(qc, sc).to_type(ScalarType.Float32),
                        Functional.DequantizeBlockwise(qg, sg).cpu().to_type(ScalarType.Float32), "8-bit dequant cpu vs cuda");

                    foreach (var type in new[] { QuantType.NF4, QuantType.FP4 })
                    {
                        foreach (var dq in new[] { false, true })
                        {
                            var (pc, s4c) = Functional.Quantize4Bit(t, bs, dq, type);
                            var (pg, s4g) = Functional.Quantize4Bit(g, bs, dq, type);
                            Assert.Equal(pc.data<byte>().ToArray(), pg.cpu().data<byte>().ToArray());
                            GoldenBlockwise8BitTests.AssertBitEqual(Functional.Dequantize4Bit(pc, s4c).to_type(ScalarType.Float32),
                                Functional.Dequantize4Bit(pg, s4g).cpu().to_type(ScalarType.Float32), $"4-bit {type} dq={dq} cpu vs cuda");
                        }
                    }
                }
            }
        }
    }

    [Fact]
    public void Int8CpuEqualsCuda()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        manual_seed(3);
        using var a = (randn(333, 1000) * 2).to_type(ScalarType.Float16);
        var (qc, sc, cc) = Functional.Int8VectorwiseQuant(a, 6f);
        var (qg, sg, cg) = Functional.Int8VectorwiseQuant(a.to(TestDevices.Cuda), 6f);
        Assert.Equal(qc.data<sbyte>().ToArray(), qg.cpu().data<sbyte>().ToArray());
        Assert.Equal(sc.data<float>().ToArray(), sg.cpu().data<float>().ToArray());
        Assert.Equal(cc!.data<long>().ToArray(), cg!.cpu().data<long>().ToArray());
    }

    internal static float[] RandomValues(Random rng, int n)
    {
        var x = new float[n];
        var kind = rng.Next(4);
        for (var i = 0; i < n; i++)
        {
            x[i] = kind switch
            {
                0 => (float)(rng.NextDouble() * 2 - 1),
                1 => (float)(Normal(rng) * Math.Pow(10, rng.Next(-3, 4))),
                _ => (float)Normal(rng),
            };
        }

        // Special values, placed at random: zeros block, -0.0, tiny, denormal, huge, NaN.
        if (n > 10)
        {
            var zstart = rng.Next(n);
            for (var i = zstart; i < Math.Min(n, zstart + 64); i++)
            {
                x[i] = 0f;
            }

            x[rng.Next(n)] = -0.0f;
            x[rng.Next(n)] = 1e-30f;
            x[rng.Next(n)] = 1e-40f;
            x[rng.Next(n)] = kind == 3 ? 1e30f : 40f;
            x[rng.Next(n)] = float.NaN;
        }

        return x;
    }

    private static double Normal(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
