using BnbDist.Backends.Cpu;
using static TorchSharp.torch;

namespace BnbDist.Backends.Tests.Cpu;

[CollectionDefinition("SimdSwitch", DisableParallelization = true)]
public sealed class SimdSwitchCollection;

/// <summary>The AVX2 paths of the CPU backend give exactly the scalar paths' bytes, on every op, dtype and awkward size.</summary>
[Collection("SimdSwitch")]
public class SimdPathTests
{
    [Fact]
    public void SimdAndScalarPathsAgreeBitForBit()
    {
        Assert.SkipUnless(System.Runtime.Intrinsics.X86.Avx2.IsSupported, "needs AVX2 to have a SIMD path to compare; the scalar path is what runs here.");
        var backend = new CpuQuantBackend();
        var rng = new Random(5);
        var code = Enumerable.Range(0, 256).Select(i => MathF.Sign(i - 127.5f) * MathF.Pow(Math.Abs(i - 127.5f) / 128f, 3)).ToArray();
        Array.Sort(code);
        using var codeT = tensor(code);
        foreach (var bs in new[] { 32, 64, 256, 4096 })
        {
            foreach (var n in new[] { 1, 31, 33, bs - 1, bs + 1, 3 * bs, 10007 })
            {
                var values = new float[n];
                for (var i = 0; i < n; i++)
                {
                    values[i] = (float)((rng.NextDouble() * 2) - 1) * (rng.Next(10) == 0 ? 1e-30f : 1f);
                }

                values[rng.Next(n)] = float.NaN;
                values[rng.Next(n)] = -0f;
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
                {
                    using var x = tensor(values).to_type(dtype);
                    var simd = RunAll(backend, x, codeT, bs, dtype);
                    SimdEncode.ForceScalar = true;
                    try
                    {
                        var scalar = RunAll(backend, x, codeT, bs, dtype);
                        for (var k = 0; k < simd.Count; k++)
                        {
                            Assert.True(simd[k].SequenceEqual(scalar[k]), $"output {k} differs (bs {bs}, n {n}, {dtype})");
                        }
                    }
                    finally
                    {
                        SimdEncode.ForceScalar = false;
                    }
                }
            }
        }
    }

    private static List<byte[]> RunAll(CpuQuantBackend backend, Tensor x, Tensor code, int bs, ScalarType dtype)
    {
        var n = x.numel();
        var blocks = QuantBackendBase.Blocks(n, bs);
        var outputs = new List<byte[]>();
        using var q8 = empty(n, ScalarType.Byte);
        using var a8 = empty(blocks);
        backend.QuantizeBlockwise(x, code, null, a8, q8, bs);
        using var d8 = empty(n, dtype);
        backend.DequantizeBlockwise(q8, code, a8, d8, bs);
        outputs.Add(Bytes(q8));
        outputs.Add(Bytes(a8));
        outputs.Add(Bytes(d8));
        foreach (var type in new[] { QuantType.NF4, QuantType.FP4 })
        {
            using var p4 = empty((n + 1) / 2, ScalarType.Byte);
            using var a4 = empty(blocks);
            backend.Quantize4Bit(x, type, a4, p4, bs);
            using var d4 = empty(n, dtype);
            backend.Dequantize4Bit(p4, type, FourBitScales.Plain(a4), d4, bs);
            outputs.Add(Bytes(p4));
            outputs.Add(Bytes(d4));
        }

        return outputs;
    }

    private static byte[] Bytes(Tensor t)
    {
        using var ms = new MemoryStream();
        t.WriteBytesToStream(ms);
        return ms.ToArray();
    }
}
