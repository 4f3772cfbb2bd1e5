using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BnbDist.Backends.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Backends.Cpu;

/// <summary>
/// The CPU implementation of every quantization op, in C#: blocks are processed in parallel, absmax and
/// normalization use SIMD, and the arithmetic follows the kernels' numerical contract bit for bit.
/// </summary>
public sealed unsafe partial class CpuQuantBackend : QuantBackendBase
{
    /// <summary>Elements handed to one parallel work item (small enough to spread over cores, large enough to amortize).</summary>
    private const long ElementsPerTask = 1 << 16;

    /// <inheritdoc/>
    public override string Name => "cpu";

    /// <inheritdoc/>
    public override DeviceType DeviceType => DeviceType.CPU;

    /// <inheritdoc/>
    protected override void QuantizeBlockwiseCore(Tensor A, Tensor code, Tensor? subOffset, Tensor absmax, Tensor output,
        long n, int blocksize)
    {
        var search = new CodeSearch(ReadFloats(code, 256));
        float? offset = subOffset is null ? null : ReadFloats(subOffset, 1)[0];
        var pout = (byte*)TensorMemory.DataPointer(output);
        ForEachScaledBlock(A, absmax, n, blocksize, offset, (start, x, inv) =>
        {
            var o = pout + start;
            var i = 0;
            if (SimdEncode.Enabled)
            {
                fixed (float* px = x)
                {
                    i = SimdEncode.Quantize8(px, x.Length, inv, search, o);
                }
            }

            for (; i < x.Length; i++)
            {
                o[i] = (byte)search.Index(x[i] * inv);
            }
        });
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void DequantizeBlockwiseCore(Tensor A, Tensor code, Tensor absmax, Tensor output, long n, int blocksize)
    {
        var table = ReadFloats(code, 256);
        var dtype = DTypeCode(output.dtype);
        var pa = (byte*)TensorMemory.DataPointer(A);
        var pabs = (float*)TensorMemory.DataPointer(absmax);
        var pout = (nint)TensorMemory.DataPointer(output);
        ForEachBlockRange(n, blocksize, (firstBlock, endBlock) =>
        {
            for (var b = firstBlock; b < endBlock; b++)
            {
                var start = b * blocksize;
                var end = Math.Min(start + blocksize, n);
                var scale = pabs[b];
                long i = start;
                fixed (float* t = table)
                {
                    i += SimdDecode.Dequantize8(pa + start, t, scale, (int)(end - start), (void*)(pout + (start * ElementSize(dtype))), dtype);
                }

                for (; i < end; i++)
                {
                    ElementIO.Store((void*)pout, dtype, i, table[pa[i]] * scale);
                }
            }
        });
        GC.KeepAlive(A);
        GC.KeepAlive(absmax);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void Quantize4BitCore(Tensor A, QuantType quantType, Tensor absmax, Tensor packed, long n, int blocksize)
    {
        var pout = (byte*)TensorMemory.DataPointer(packed);
        ForEachScaledBlock(A, absmax, n, blocksize, null, (start, x, inv) =>
        {
            // Blocks are even-sized, so a byte never straddles two blocks; only the last element may be unpaired.
            var o = pout + (start >> 1);
            var len = x.Length;
            var i = 0;
            if (SimdEncode.Enabled)
            {
                fixed (float* px = x)
                {
                    i = SimdEncode.Quantize4(px, len, inv, quantType, o);
                }
            }

            for (; i < len; i += 2)
            {
                var hi = FourBitTables.Encode(x[i] * inv, quantType);
                var lo = i + 1 < len ? FourBitTables.Encode(x[i + 1] * inv, quantType) : FourBitTables.Encode(0f, quantType);
                o[i >> 1] = (byte)((hi << 4) | lo);
            }
        });
        GC.KeepAlive(packed);
    }

    /// <inheritdoc/>
    protected override void Dequantize4BitCore(Tensor packed, QuantType quantType, FourBitScales scales, Tensor output,
        long n, int blocksize)
    {
        var table = FourBitTables.DequantTable(quantType).ToArray();
        var tableLo = Vector256.Create(table.AsSpan(0, 8));
        var tableHi = Vector256.Create(table.AsSpan(8, 8));
        var dtype = DTypeCode(output.dtype);
        var pin = (byte*)TensorMemory.DataPointer(packed);
        var pout = (nint)TensorMemory.DataPointer(output);
        var scaleOf = BlockScales(scales, Blocks(n, blocksize));
        ForEachBlockRange(n, blocksize, (firstBlock, endBlock) =>
        {
            for (var b = firstBlock; b < endBlock; b++)
            {
                var start = b * blocksize;
                var end = Math.Min(start + blocksize, n);
                var scale = scaleOf[b];
                var i = start + SimdDecode.Dequantize4(pin, start, (int)(end - start), tableLo, tableHi, scale, (void*)pout, dtype);
                for (; i < end; i++)
                {
                    var byteValue = pin[i >> 1];
                    var c = (i & 1) == 0 ? byteValue >> 4 : byteValue & 0xF;
                    ElementIO.Store((void*)pout, dtype, i, table[c] * scale);
                }
            }
        });
        GC.KeepAlive(packed);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void MeanCore(Tensor x, Tensor output, long n)
    {
        var px = (float*)TensorMemory.DataPointer(x);
        // torch's mean (which bitsandbytes uses for the offset) multiplies the sum by an f32 1/n factor.
        var mean = n == 0 ? 0f : (float)DeterministicSum(px, n) * (1f / n);
        *(float*)TensorMemory.DataPointer(output) = mean;
        GC.KeepAlive(x);
        GC.KeepAlive(output);
    }

    /// <inheritdoc/>
    protected override void Int8VectorwiseQuantCore(Tensor A, float threshold, Tensor output, Tensor rowStats, long rows, long cols)
    {
        var dtype = DTypeCode(A.dtype);
        var pa = (nint)TensorMemory.DataPointer(A);
        var pout = (sbyte*)TensorMemory.DataPointer(output);
        var pstats = (float*)TensorMemory.DataPointer(rowStats);
        var outlierMode = threshold > 0f;
        Parallel.For(0, rows, r =>
        {
            var row = new float[cols];
            ElementIO.Load((void*)pa, dtype, r * cols, row);
            var max = 0f;
            foreach (var v in row)
            {
                var a = MathF.Abs(v);
                if (a > max && (!outlierMode || a < threshold))
                {
                    max = a;
                }
            }

            pstats[r] = max;
            var scale = 127f / max;
            var o = pout + (r * cols);
            for (var c = 0; c < cols; c++)
            {
                var v = row[c];
                var outlier = outlierMode && MathF.Abs(v) >= threshold;
                o[c] = outlier || max == 0f ? (sbyte)0 : (sbyte)Math.Clamp(MathF.Round(v * scale, MidpointRounding.ToEven), -127f, 127f);
            }
        });
        GC.KeepAlive(A);
        GC.KeepAlive(output);
        GC.KeepAlive(rowStats);
    }

    /// <summary>
    /// The canonical sum of the deterministic mean: f64 tree sums over chunks of 1024 (s[i] += s[i + stride],
    /// stride 512 → 1, zero padded), then the chunk sums added in order.
    /// </summary>
    internal static double DeterministicSum(float* x, long n)
    {
        Span<double> s = stackalloc double[1024];
        double total = 0;
        for (long c = 0; c < n; c += 1024)
        {
            var len = (int)Math.Min(1024, n - c);
            for (var i = 0; i < 1024; i++)
            {
                s[i] = i < len ? x[c + i] : 0.0;
            }

            for (var stride = 512; stride >= 1; stride >>= 1)
            {
                for (var i = 0; i < stride; i++)
                {
                    s[i] += s[i + stride];
                }
            }

            total += s[0];
        }

        return total;
    }

    /// <summary>max |x| ignoring NaN (a NaN never compares greater), as the CUDA kernels' fmaxf reduction does.</summary>
    internal static float AbsMax(ReadOnlySpan<float> x)
    {
        fixed (float* p = x)
        {
            return AbsMax(p, x.Length);
        }
    }

    /// <summary>
    /// <see cref="AbsMax(ReadOnlySpan{float})"/> over a pointer: four independent maxima so that the loop is not one
    /// dependency chain. Avx.Max(a, m) is maxps, i.e. a &gt; m ? a : m with m returned when a is NaN: the same per-lane
    /// rule as the scalar loop, and the maximum of non-NaN magnitudes does not depend on the order.
    /// </summary>
    internal static float AbsMax(float* x, int len)
    {
        var i = 0;
        var max = 0f;
        if (Avx.IsSupported && len >= 32)
        {
            var mask = Vector256.Create(0x7FFFFFFF).AsSingle();
            Vector256<float> m0 = default, m1 = default, m2 = default, m3 = default;
            for (; i <= len - 32; i += 32)
            {
                m0 = Avx.Max(Avx.And(Avx.LoadVector256(x + i), mask), m0);
                m1 = Avx.Max(Avx.And(Avx.LoadVector256(x + i + 8), mask), m1);
                m2 = Avx.Max(Avx.And(Avx.LoadVector256(x + i + 16), mask), m2);
                m3 = Avx.Max(Avx.And(Avx.LoadVector256(x + i + 24), mask), m3);
            }

            var vmax = Avx.Max(Avx.Max(m0, m1), Avx.Max(m2, m3));
            for (var k = 0; k < Vector256<float>.Count; k++)
            {
                var v = vmax.GetElement(k);
                if (v > max)
                {
                    max = v;
                }
            }
        }

        for (; i < len; i++)
        {
            var a = MathF.Abs(x[i]);
            if (a > max)
            {
                max = a;
            }
        }

        return max;
    }

    [ThreadStatic]
    private static float[]? taskBuffer;

    private static int ElementSize(int dtype) => dtype == 0 ? 4 : 2;

    private static Span<float> TaskBuffer(int length)
    {
        if (taskBuffer is null || taskBuffer.Length < length)
        {
            taskBuffer = new float[Math.Max(length, (int)ElementsPerTask)];
        }

        return taskBuffer.AsSpan(0, length);
    }

    private static float[] BlockScales(FourBitScales scales, long blocks)
    {
        var result = new float[blocks];
        if (!scales.IsNested)
        {
            new ReadOnlySpan<float>((float*)TensorMemory.DataPointer(scales.Absmax!), (int)blocks).CopyTo(result);
            GC.KeepAlive(scales.Absmax);
            return result;
        }

        var code = ReadFloats(scales.NestedCode!, 256);
        var offset = ReadFloats(scales.Offset!, 1)[0];
        var q = (byte*)TensorMemory.DataPointer(scales.QAbsmax!);
        var nested = (float*)TensorMemory.DataPointer(scales.NestedAbsmax!);
        for (long b = 0; b < blocks; b++)
        {
            // Two roundings, as bitsandbytes computes dequantize_blockwise(...) and then adds the offset.
            var scaled = code[q[b]] * nested[b / scales.NestedBlocksize];
            result[b] = scaled + offset;
        }

        GC.KeepAlive(scales.QAbsmax);
        GC.KeepAlive(scales.NestedAbsmax);
        return result;
    }

    private static float[] ReadFloats(Tensor t, int count)
    {
        var result = new float[count];
        new ReadOnlySpan<float>((float*)TensorMemory.DataPointer(t), count).CopyTo(result);
        GC.KeepAlive(t);
        return result;
    }

    /// <summary>
    /// The shared front half of every quantizer: blocks in parallel, each loaded as f32 (minus <paramref name="offset"/>),
    /// its absmax (NaN ignored) written to <paramref name="absmax"/>, then handed to <paramref name="encode"/> with 1/absmax
    /// (f32 input without an offset is read in place, so encoders must only read the block).
    /// </summary>
    private static void ForEachScaledBlock(Tensor A, Tensor absmax, long n, int blocksize, float? offset, ScaledBlockAction encode)
    {
        var dtype = DTypeCode(A.dtype);
        var pa = (nint)TensorMemory.DataPointer(A);
        var pabs = (float*)TensorMemory.DataPointer(absmax);
        ForEachBlockRange(n, blocksize, (firstBlock, endBlock) =>
        {
            if (dtype == 0 && offset is null)
            {
                // f32 without an offset: the blocks are read in place (a copy would be one more pass over the data).
                for (var b = firstBlock; b < endBlock; b++)
                {
                    var start = b * blocksize;
                    var x = new Span<float>((float*)pa + start, (int)Math.Min(blocksize, n - start));
                    var max = AbsMax(x);
                    pabs[b] = max;
                    encode(start, x, 1f / max);
                }

                return;
            }

            // Convert the task's whole range to f32 at once: one bulk conversion instead of one per (small) block.
            var rangeStart = firstBlock * blocksize;
            var all = TaskBuffer((int)(Math.Min(n, endBlock * blocksize) - rangeStart));
            ElementIO.Load((void*)pa, dtype, rangeStart, all);
            for (var b = firstBlock; b < endBlock; b++)
            {
                var start = b * blocksize;
                var x = all.Slice((int)(start - rangeStart), (int)Math.Min(blocksize, n - start));
                if (offset is float off)
                {
                    for (var k = 0; k < x.Length; k++)
                    {
                        x[k] -= off;
                    }
                }

                var max = AbsMax(x);
                pabs[b] = max;
                encode(start, x, 1f / max);
            }
        });
        GC.KeepAlive(A);
        GC.KeepAlive(absmax);
    }

    private delegate void ScaledBlockAction(long start, Span<float> x, float inv);

    private static void ForEachBlockRange(long n, int blocksize, Action<long, long> body)
    {
        var blocks = Blocks(n, blocksize);
        var blocksPerTask = Math.Max(1, ElementsPerTask / blocksize);
        var tasks = (blocks + blocksPerTask - 1) / blocksPerTask;
        if (tasks == 1)
        {
            body(0, blocks);
            return;
        }

        Parallel.For(0, tasks, t => body(t * blocksPerTask, Math.Min(blocks, (t + 1) * blocksPerTask)));
    }
}
