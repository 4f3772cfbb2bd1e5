using BnbDist.Backends.Interop;
using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Backends;

/// <summary>
/// The CPU backend splits tensors into 256-aligned chunks and runs them on several threads; this proves the result is
/// bit-identical to one single-threaded kernel call over the whole tensor, for every rule, state precision and
/// parameter dtype (bf16/f16 through the kernels' rounding), over several steps.
/// </summary>
public class CpuStepBackendTests
{
    public static TheoryData<string, bool, ScalarType> Cases()
    {
        var data = new TheoryData<string, bool, ScalarType>();
        foreach (var rule in Enum.GetValues<UpdateRule>())
        {
            foreach (var is8bit in new[] { true, false })
            {
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
                {
                    data.Add(rule.ToString(), is8bit, dtype);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ParallelChunksAreBitIdenticalToOneSingleThreadedKernelCall(string ruleName, bool is8bit, ScalarType dtype)
    {
        var rule = Enum.Parse<UpdateRule>(ruleName);
        // Three chunks and a partial last block: chunk boundaries cut through the tensor, the last block has 153 elements.
        const long n = (2 * CpuStepBackend.ChunkElements) + 4249;
        using var parallel = new StepFixture(rule, is8bit, dtype, n, seed: 7);
        using var single = new StepFixture(rule, is8bit, dtype, n, seed: 7);
        for (var step = 1; step <= 3; step++)
        {
            OptimizerBackends.Run(CpuStepBackend.Instance, rule, [parallel.Update(step)]);
            SingleThreaded(single.Update(step), rule, dtype);
            Assert.Equal(single.Snapshot(), parallel.Snapshot());
        }
    }

    /// <summary>
    /// The reference: one kernel call over whole spans. Parameters are widened and narrowed in C# here, not with torch
    /// casts, whose handling of f16 subnormals depends on the calling thread's denormal mode.
    /// </summary>
    private static unsafe void SingleThreaded(ParamUpdate u, UpdateRule rule, ScalarType dtype)
    {
        var n = (int)u.Count;
        var raw = (void*)TensorMemory.DataPointer(u.Param);
        var p = new float[n];
        var g = new float[n];
        Widen(raw, dtype, p);
        Widen((void*)TensorMemory.DataPointer(u.Grad), dtype, g);
        switch (dtype)
        {
            case ScalarType.Float32:
                Run<Float32Rounding>(u, rule, p, g);
                break;
            case ScalarType.BFloat16:
                Run<BFloat16Rounding>(u, rule, p, g);
                break;
            default:
                Run<Float16Rounding>(u, rule, p, g);
                break;
        }

        // Exact: the kernel rounded every stored value to the parameter dtype.
        for (var i = 0; i < n; i++)
        {
            switch (dtype)
            {
                case ScalarType.Float32:
                    ((float*)raw)[i] = p[i];
                    break;
                case ScalarType.BFloat16:
                    ((ushort*)raw)[i] = (ushort)(BitConverter.SingleToUInt32Bits(p[i]) >> 16);
                    break;
                default:
                    ((ushort*)raw)[i] = BitConverter.HalfToUInt16Bits((Half)p[i]);
                    break;
            }
        }
    }

    private static unsafe void Widen(void* src, ScalarType dtype, float[] dst)
    {
        for (var i = 0; i < dst.Length; i++)
        {
            dst[i] = dtype switch
            {
                ScalarType.Float32 => ((float*)src)[i],
                ScalarType.BFloat16 => BitConverter.Int32BitsToSingle(((ushort*)src)[i] << 16),
                _ => (float)BitConverter.UInt16BitsToHalf(((ushort*)src)[i]),
            };
        }
    }

    private static unsafe void Run<TRound>(ParamUpdate u, UpdateRule rule, float[] p, float[] g)
        where TRound : struct, IParamRounding
    {
        var n = p.Length;
        var h = u.Hyper;
        if (!u.Is8bit)
        {
            var s1 = new Span<float>((void*)TensorMemory.DataPointer(u.State1), n);
            if (rule == UpdateRule.Adam)
            {
                TwoState32bit.Step<TRound>(p, g, s1, new Span<float>((void*)TensorMemory.DataPointer(u.State2!), n), h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
            }
            else
            {
                OneState32bit.Step<TRound>(rule, p, g, s1, h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
            }

            return;
        }

        var blocks = (n + 255) / 256;
        var c1 = new Span<byte>((void*)TensorMemory.DataPointer(u.State1), n);
        var a1 = new Span<float>((void*)TensorMemory.DataPointer(u.Absmax1!), blocks);
        var q1 = new ReadOnlySpan<float>((void*)TensorMemory.DataPointer(u.Qmap1!), 256);
        if (rule == UpdateRule.Adam)
        {
            Adam8bitBlockwise.Step<TRound>(p, g, c1, new Span<byte>((void*)TensorMemory.DataPointer(u.State2!), n), a1,
                new Span<float>((void*)TensorMemory.DataPointer(u.Absmax2!), blocks), q1,
                new ReadOnlySpan<float>((void*)TensorMemory.DataPointer(u.Qmap2!), 256), h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
        }
        else
        {
            OneState8bitBlockwise.Step<TRound>(rule, p, g, c1, a1, q1, h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
        }
    }
}
