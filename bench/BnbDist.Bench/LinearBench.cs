using BnbDist.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>
/// The quantized-linear rows of issue #3 against their 16-bit baselines, measured in one run: the 4-bit GEMV (one row, decode),
/// the Linear4bit forward at 16 and 512 rows (dequantize + matmul), LLM.int8 at 4096 rows, and the bits per parameter of a
/// double-quantized Linear4bit. Weights (and inputs) rotate between two copies so that the L2 cache cannot hold them; every
/// kernel output is checked against the CPU before it is timed. Each group runs on its own: a failing group becomes an
/// <c>*_error</c> row and the others still run.
/// </summary>
internal sealed class LinearBench(Device device, Timing timing)
{
    private const int Side = 8192;

    /// <summary>Calls per sample of the back-to-back rows (<c>*_x10</c>): the device time of a decode loop, host overhead hidden.</summary>
    private const int Batch = 10;

    /// <summary>Whether a group failed.</summary>
    public bool Failed { get; private set; }

    public IEnumerable<BenchResult> Run()
    {
        var groups = new (string Name, Func<List<BenchResult>> Run)[]
        {
            ("gemv_4bit_nf4_bf16_8192", Gemv),
            ("matmul_4bit_nf4_bf16_8192", FourBitMatmul),
            ("int8_linear_8192_b4096", Int8Linear),
            ("linear4bit_bits_per_param", BitsPerParam),
        };
        foreach (var (name, run) in groups)
        {
            List<BenchResult> rows;
            try
            {
                using var scope = NewDisposeScope();
                rows = run();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Failed = true;
                Console.Error.WriteLine($"bench group {name} failed: {e}");
                rows = [new BenchResult(name + "_error", 0, 0, 0, 0, 0, e.GetType().Name + ": " + e.Message, Unit: "error")];
            }

            foreach (var r in rows)
            {
                yield return r;
            }
        }
    }

    private List<BenchResult> Gemv()
    {
        var rows = new List<BenchResult>();
        var weights = Enumerable.Range(0, 2).Select(_ => Functional.QuantizeNF4(RandomBf16(Side, Side), 64, compressStatistics: true)).ToArray();
        var x = RandomBf16(1, Side);
        var y = empty([1, Side], ScalarType.BFloat16, device);
        VerifyGemv(x, weights[0].Packed, weights[0].State);

        long n = (long)Side * Side, blocks = n / 64;
        var statBytes = blocks + (4 * ((blocks + 255) / 256)) + 4;
        var bytes = (n / 2) + statBytes + (4L * Side);
        void Call(int i) => Functional.Gemv4Bit(x, weights[i % 2].Packed, weights[i % 2].State, y);
        rows.Add(Row("gemv_4bit_nf4_bf16_8192", timing.Measure(Call), bytes, "Functional.Gemv4Bit, preallocated output; one call per event pair (host overhead included)"));
        rows.Add(Row("gemv_4bit_nf4_bf16_8192_x10", timing.MeasureBatched(Call, Batch), bytes, $"{Batch} back-to-back calls per sample, time per call"));

        var dense = Enumerable.Range(0, 2).Select(_ => RandomBf16(Side, Side)).ToArray();
        void Dense(int i) => nn.functional.linear(x, dense[i % 2]).Dispose();
        var denseBytes = (2 * n) + (4L * Side);
        rows.Add(Row("bf16_matmul_8192_b1", timing.Measure(Dense), denseBytes, "torch linear, bf16 weight; one call per event pair"));
        rows.Add(Row("bf16_matmul_8192_b1_x10", timing.MeasureBatched(Dense, Batch), denseBytes, $"{Batch} back-to-back calls per sample, time per call"));
        return rows;
    }

    /// <summary>CUDA GEMV against the CPU reference (f64 dot products of the f32-dequantized weight) within the kernel's stated bound.</summary>
    private static void VerifyGemv(Tensor x, Tensor packed, QuantState state)
    {
        using var scope = NewDisposeScope();
        var cpuState = state.To(CPU);
        var reference = Functional.Gemv4Bit(x.cpu(), packed.cpu(), cpuState).to_type(ScalarType.Float64);
        var got = Functional.Gemv4Bit(x, packed, state).cpu().to_type(ScalarType.Float64);
        var w = Functional.Dequantize4Bit(packed.cpu(), cpuState, empty([Side, Side], ScalarType.Float32)).to_type(ScalarType.Float64);
        var absDot = w.abs().matmul(x.cpu().to_type(ScalarType.Float64).abs().t()).flatten();
        var bound = (absDot * (((Side / 32.0) + 40) * Math.Pow(2, -24) * (1 + Math.Pow(2, -8)))) + (reference.abs() * (Math.Pow(2, -7) * 1.01));
        var worst = ((got - reference).abs() / bound).max().item<double>();
        Check(worst <= 1.0, $"GEMV differs from the CPU reference by {worst:F3} of the bound");
    }

    private List<BenchResult> FourBitMatmul()
    {
        var rows = new List<BenchResult>();
        var layers = Enumerable.Range(0, 2).Select(_ =>
        {
            var l = new Linear4bit(Side, Side, hasBias: false, ScalarType.BFloat16, compressStatistics: true, QuantType.NF4);
            l.to(device);
            return l;
        }).ToArray();
        var dense = Enumerable.Range(0, 2).Select(_ => RandomBf16(Side, Side)).ToArray();
        long n = (long)Side * Side, blocks = n / 64;
        var statBytes = blocks + (4 * ((blocks + 255) / 256)) + 4;
        foreach (var batch in new[] { 16, 512 })
        {
            var xs = Enumerable.Range(0, 2).Select(_ => RandomBf16(batch, Side)).ToArray();
            using (no_grad())
            {
                var t = timing.Measure(i => layers[i % 2].forward(xs[i % 2]).Dispose());
                rows.Add(Row($"matmul_4bit_nf4_bf16_8192_b{batch}", t, (n / 2) + statBytes + (4L * batch * Side),
                    "Linear4bit.forward under no_grad: dequantize to bf16 + torch linear"));
                t = timing.Measure(i => nn.functional.linear(xs[i % 2], dense[i % 2]).Dispose());
                rows.Add(Row($"bf16_matmul_8192_b{batch}", t, (2 * n) + (4L * batch * Side), "torch linear, bf16 weight"));
            }
        }

        foreach (var l in layers)
        {
            l.Dispose();
        }

        return rows;
    }

    private List<BenchResult> Int8Linear()
    {
        const int batch = 4096;
        var rows = new List<BenchResult>();
        var layers = Enumerable.Range(0, 2).Select(_ =>
        {
            var l = new Linear8bitLt(Side, Side, hasBias: true, hasFp16Weights: false, threshold: 6f);
            l.to(device);
            return l;
        }).ToArray();
        var dense = Enumerable.Range(0, 2).Select(_ => nn.Linear(Side, Side, hasBias: true, device: device, dtype: ScalarType.Float16)).ToArray();
        var xs = Enumerable.Range(0, 2).Select(k => OutlierInput(batch, k)).ToArray();
        VerifyInt8(layers[0]);
        using (no_grad())
        {
            var t = timing.Measure(i => layers[i % 2].forward(xs[i % 2]).Dispose());
            rows.Add(Row("int8_linear_8192_b4096", t, ((long)Side * Side) + (4L * batch * Side),
                "Linear8bitLt.forward, threshold 6, fp16 input N(0,1) with 6 outlier columns (x20): int8 quant + cuBLASLt int8 GEMM + dequant + fp16 outlier matmul"));
            t = timing.Measure(i => dense[i % 2].forward(xs[i % 2]).Dispose());
            rows.Add(Row("fp16_linear_8192_b4096", t, (2L * Side * Side) + (4L * batch * Side), "torch nn.Linear, fp16"));
        }

        foreach (var m in layers.Cast<nn.Module>().Concat(dense))
        {
            m.Dispose();
        }

        return rows;
    }

    /// <summary>N(0, 1) fp16 activations with a few outlier columns scaled ×20 (|x| ≥ 6 in most of their rows), as in LLM.int8's models.</summary>
    private Tensor OutlierInput(int batch, int seed)
    {
        manual_seed(100 + seed);
        var x = randn(batch, Side, device: device);
        foreach (var c in new[] { 17, 512, 1999, 4096, 6000, 8000 })
        {
            x[.., c] = x[.., c] * 20;
        }

        return x.to_type(ScalarType.Float16);
    }

    /// <summary>The cuBLASLt int8 GEMM equals the exact CPU product bit for bit (64 rows against the layer's int8 weight).</summary>
    private void VerifyInt8(Linear8bitLt layer)
    {
        using var scope = NewDisposeScope();
        var a = randint(-127, 128, [64, Side], ScalarType.Int8, device: device);
        var gpu = Functional.Int8LinearMatmul(a, layer.Weight).cpu();
        var cpu = Functional.Int8LinearMatmul(a.cpu(), layer.Weight.cpu());
        Check(gpu.equal(cpu).all().item<bool>(), "int8 GEMM differs from the exact CPU product");
    }

    private List<BenchResult> BitsPerParam()
    {
        var layer = new Linear4bit(Side, Side, hasBias: false, ScalarType.BFloat16, compressStatistics: true, QuantType.NF4);
        layer.to(device);
        var bytes = layer.QuantizedStateDict().Values.Sum(t => t.numel() * t.element_size());
        var bits = 8.0 * bytes / ((long)Side * Side);
        layer.Dispose();
        return [new BenchResult("linear4bit_bits_per_param", 0, 0, 0, 1, bytes,
            $"Linear4bit 8192x8192 NF4 bs 64 with double quant: all bytes of its state dict (packed weight, absmax codes, nested absmax, " +
            $"offset, code books, quant_state blob) x 8 / params; goal <= 4.13", Value: Math.Round(bits, 4), Unit: "bits/param")];
    }

    private Tensor RandomBf16(long rows, long cols)
    {
        using var f = randn(rows, cols, device: device);
        return f.to_type(ScalarType.BFloat16);
    }

    private static void Check(bool ok, string what)
    {
        if (!ok)
        {
            throw new InvalidOperationException("Correctness check failed before timing: " + what);
        }
    }

    private BenchResult Row(string name, double[] sorted, long bytes, string note) =>
        new(name, Timing.Median(sorted), sorted[0], sorted[^1], timing.Repeats, bytes, note);
}
