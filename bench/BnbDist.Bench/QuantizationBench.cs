using BnbDist.Backends;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>
/// The quantization rows of issue #2: blockwise 8-bit on 256M elements (f32, bf16; bs 4096) and NF4 with double
/// quant on an 8192x8192 bf16 matrix. Inputs are random normal, rotated between two buffers so caches cannot help;
/// on CUDA each op is first checked against the CPU backend with a poisoned output.
/// </summary>
internal sealed class QuantizationBench(Device device, Timing timing, long elements8Bit, long side4Bit)
{
    private const int Blocksize8 = 4096;

    public IEnumerable<BenchResult> Run()
    {
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            foreach (var r in Blockwise(dt))
            {
                yield return r;
            }
        }

        foreach (var r in FourBit())
        {
            yield return r;
        }
    }

    private IEnumerable<BenchResult> Blockwise(ScalarType dtype)
    {
        var n = elements8Bit;
        var tag = dtype == ScalarType.Float32 ? "f32" : "bf16";
        var size = n == 268435456 ? "256M" : $"{n}";
        var esize = dtype == ScalarType.Float32 ? 4 : 2;
        var backend = QuantBackends.For(device);
        var code = CodeBooks.DynamicMap(true, device);
        var inputs = new[] { Random(n, dtype), Random(n, dtype) };
        var q = empty(n, ScalarType.Byte, device);
        var absmax = empty(QuantBackendBase.Blocks(n, Blocksize8), ScalarType.Float32, device);
        var deq = empty(n, dtype, device);

        VerifyBlockwise(inputs[0], code, dtype);

        var absBytes = 4 * QuantBackendBase.Blocks(n, Blocksize8);
        var t = timing.Measure(i => backend.QuantizeBlockwise(inputs[i % 2], code, null, absmax, q, Blocksize8));
        yield return Row($"quantize_blockwise_{tag}_{size}_bs{Blocksize8}", t, (esize * n) + n + absBytes);

        // Dequantize codes of real data: quantize each input once, rotate between the two.
        var qs = inputs.Select(x =>
        {
            var qq = empty(n, ScalarType.Byte, device);
            var aa = empty(QuantBackendBase.Blocks(n, Blocksize8), ScalarType.Float32, device);
            backend.QuantizeBlockwise(x, code, null, aa, qq, Blocksize8);
            return (qq, aa);
        }).ToArray();
        t = timing.Measure(i => backend.DequantizeBlockwise(qs[i % 2].qq, code, qs[i % 2].aa, deq, Blocksize8));
        yield return Row($"dequantize_blockwise_{tag}_{size}_bs{Blocksize8}", t, n + absBytes + (esize * n));

        foreach (var x in inputs)
        {
            x.Dispose();
        }

        q.Dispose();
        deq.Dispose();
    }

    private IEnumerable<BenchResult> FourBit()
    {
        var side = side4Bit;
        var n = side * side;
        var name = $"{side}x{side}";
        var inputs = new[] { Random(n, ScalarType.BFloat16).view(side, side), Random(n, ScalarType.BFloat16).view(side, side) };

        VerifyFourBit(inputs[0]);

        var blocks = QuantBackendBase.Blocks(n, 64);
        var statBytes = blocks + (4 * QuantBackendBase.Blocks(blocks, 256)) + 4;
        // Preallocated outputs, as for the 8-bit rows: on the CPU a fresh allocation's first-touch page faults would
        // otherwise dominate (libtorch's CPU allocator returns large blocks to the OS); the GPU's caching allocator has no such cost.
        var packedOut = empty([n / 2, 1], ScalarType.Byte, device);
        var absmaxOut = empty(blocks, ScalarType.Float32, device);
        var t = timing.Measure(i =>
        {
            using var scope = NewDisposeScope();
            Functional.Quantize4Bit(inputs[i % 2], 64, true, QuantType.NF4, absmaxOut, packedOut);
        });
        // Bytes: read bf16 once, write packed + u8 absmax + nested stats (the f32 absmax round trip is internal).
        yield return Row($"quantize_4bit_nf4_bf16_{name}_dq", t, (2 * n) + (n / 2) + statBytes);

        var quantized = inputs.Select(x => Functional.QuantizeNF4(x, 64, compressStatistics: true)).ToArray();
        var output = empty([side, side], ScalarType.BFloat16, device);
        t = timing.Measure(i => Functional.Dequantize4Bit(quantized[i % 2].Packed, quantized[i % 2].State, output));
        yield return Row($"dequantize_4bit_nf4_bf16_{name}_dq", t, (n / 2) + statBytes + (2 * n));
    }

    private void VerifyBlockwise(Tensor x, Tensor code, ScalarType dtype)
    {
        if (device.type != DeviceType.CUDA)
        {
            return;
        }

        // A block-aligned prefix quantizes identically on its own: compare it with the CPU backend.
        var prefix = Math.Min(x.numel(), 1L << 24);
        var q = full(x.numel(), 0xCD, ScalarType.Byte, device);
        var absmax = full(QuantBackendBase.Blocks(x.numel(), Blocksize8), float.NaN, ScalarType.Float32, device);
        QuantBackends.For(device).QuantizeBlockwise(x, code, null, absmax, q, Blocksize8);
        var (qc, sc) = Functional.QuantizeBlockwise(x.narrow(0, 0, prefix).cpu(), blocksize: Blocksize8);
        Check(q.narrow(0, 0, prefix).cpu().equal(qc).all().item<bool>(), $"8-bit {dtype} codes differ from the CPU backend");
        Check(absmax.narrow(0, 0, sc.Absmax.numel()).cpu().equal(sc.Absmax).all().item<bool>(), $"8-bit {dtype} absmax differs from the CPU backend");
        Check(!absmax.isnan().any().item<bool>(), "8-bit absmax left unwritten");
        var deq = full(x.numel(), float.NaN, dtype, device);
        QuantBackends.For(device).DequantizeBlockwise(q, code, absmax, deq, Blocksize8);
        Check(deq.narrow(0, 0, prefix).cpu().equal(Functional.DequantizeBlockwise(qc, sc)).all().item<bool>(), $"8-bit {dtype} dequant differs from the CPU backend");
        Check(!deq.isnan().any().item<bool>(), "8-bit dequant output left unwritten");
    }

    private void VerifyFourBit(Tensor x)
    {
        if (device.type != DeviceType.CUDA)
        {
            return;
        }

        var packed = full([x.numel() / 2, 1], 0xCD, ScalarType.Byte, device);
        var (p, s) = Functional.Quantize4Bit(x, 64, true, QuantType.NF4, @out: packed);
        var (pc, sc) = Functional.Quantize4Bit(x.cpu(), 64, true, QuantType.NF4);
        Check(p.cpu().equal(pc).all().item<bool>(), "NF4 packed bytes differ from the CPU backend");
        Check(s.Absmax.cpu().equal(sc.Absmax).all().item<bool>(), "NF4 nested absmax codes differ from the CPU backend");
        Check(s.Offset!.cpu().equal(sc.Offset!).all().item<bool>(), "NF4 offset differs from the CPU backend");
        var deq = full(x.shape, float.NaN, ScalarType.BFloat16, device);
        Functional.Dequantize4Bit(p, s, deq);
        Check(deq.cpu().equal(Functional.Dequantize4Bit(pc, sc)).all().item<bool>(), "NF4 dequant differs from the CPU backend");
    }

    private static void Check(bool ok, string what)
    {
        if (!ok)
        {
            throw new InvalidOperationException("Correctness check failed before timing: " + what);
        }
    }

    private Tensor Random(long n, ScalarType dtype)
    {
        using var f = randn(n, device: device);
        return f.to_type(dtype);
    }

    private BenchResult Row(string name, double[] sorted, long bytes) =>
        new(name, Timing.Median(sorted), sorted[0], sorted[^1], timing.Repeats, bytes);
}
