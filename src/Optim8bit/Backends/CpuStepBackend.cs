using System.Buffers;
using BnbDist.Backends.Cpu;
using BnbDist.Backends.Interop;
using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Backends;

/// <summary>
/// The CPU step: the C# kernels, run in parallel over 256-aligned chunks of every tensor of the group. Blocks are
/// independent in every kernel, so the result is bit-identical to one single-threaded call per tensor. bf16/f16
/// parameters are widened to f32 per chunk and stored back (the kernels round them where bitsandbytes does).
/// </summary>
internal sealed unsafe class CpuStepBackend : IOptimizerStepBackend
{
    /// <summary>Elements per parallel work item: a multiple of the 256-element block, large enough to amortize scheduling.</summary>
    internal const int ChunkElements = 1 << 16;

    public static readonly CpuStepBackend Instance = new();

    /// <inheritdoc/>
    public string Name => "cpu";

    /// <inheritdoc/>
    public void Step(UpdateRule rule, IReadOnlyList<ParamUpdate> updates)
    {
        var views = new Pointers[updates.Count];
        var chunks = new List<(int Update, long Start, int Length)>();
        for (var k = 0; k < updates.Count; k++)
        {
            views[k] = new Pointers(updates[k]);
            var n = updates[k].Count;
            for (long start = 0; start < n; start += ChunkElements)
            {
                chunks.Add((k, start, (int)Math.Min(ChunkElements, n - start)));
            }
        }

        Parallel.For(0, chunks.Count, c =>
        {
            var (k, start, length) = chunks[c];
            StepChunk(rule, in views[k], updates[k].Hyper, start, length);
        });
        GC.KeepAlive(updates);
    }

    private static void StepChunk(UpdateRule rule, in Pointers v, StepHyperparameters h, long start, int length)
    {
        if (v.DType == 0)
        {
            var p = new Span<float>((float*)v.Param + start, length);
            var g = new ReadOnlySpan<float>((float*)v.Grad + start, length);
            Dispatch<Float32Rounding>(rule, in v, h, start, p, g);
            return;
        }

        var pbuf = ArrayPool<float>.Shared.Rent(length);
        var gbuf = ArrayPool<float>.Shared.Rent(length);
        try
        {
            var p = pbuf.AsSpan(0, length);
            var g = gbuf.AsSpan(0, length);
            ElementIO.Load((void*)v.Param, v.DType, start, p);
            ElementIO.Load((void*)v.Grad, v.DType, start, g);
            if (v.DType == 1)
            {
                Dispatch<BFloat16Rounding>(rule, in v, h, start, p, g);
            }
            else
            {
                Dispatch<Float16Rounding>(rule, in v, h, start, p, g);
            }

            // Exact: the kernels already rounded every stored value to the parameter dtype.
            for (var i = 0; i < length; i++)
            {
                ElementIO.Store((void*)v.Param, v.DType, start + i, p[i]);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(pbuf);
            ArrayPool<float>.Shared.Return(gbuf);
        }
    }

    private static void Dispatch<TRound>(UpdateRule rule, in Pointers v, StepHyperparameters h, long start, Span<float> p, ReadOnlySpan<float> g)
        where TRound : struct, IParamRounding
    {
        var n = p.Length;
        if (v.Is8bit)
        {
            var firstBlock = start / Adam8bitBlockwise.BlockSize;
            var blocks = (n + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
            var s1 = new Span<byte>((byte*)v.State1 + start, n);
            var a1 = new Span<float>((float*)v.Absmax1 + firstBlock, blocks);
            var q1 = new ReadOnlySpan<float>((float*)v.Qmap1, 256);
            if (rule == UpdateRule.Adam)
            {
                Adam8bitBlockwise.Step<TRound>(p, g, s1, new Span<byte>((byte*)v.State2 + start, n), a1,
                    new Span<float>((float*)v.Absmax2 + firstBlock, blocks), q1, new ReadOnlySpan<float>((float*)v.Qmap2, 256),
                    h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
            }
            else
            {
                OneState8bitBlockwise.Step<TRound>(rule, p, g, s1, a1, q1, h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
            }

            return;
        }

        var f1 = new Span<float>((float*)v.State1 + start, n);
        if (rule == UpdateRule.Adam)
        {
            TwoState32bit.Step<TRound>(p, g, f1, new Span<float>((float*)v.State2 + start, n), h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
        }
        else
        {
            OneState32bit.Step<TRound>(rule, p, g, f1, h.Beta1, h.Beta2, h.Eps, h.Lr, h.WeightDecay, h.Step);
        }
    }

    /// <summary>Data pointers of one update (the tensors are kept alive by the caller's list).</summary>
    private readonly struct Pointers
    {
        public Pointers(ParamUpdate u)
        {
            Param = TensorMemory.DataPointer(u.Param);
            Grad = TensorMemory.DataPointer(u.Grad);
            State1 = TensorMemory.DataPointer(u.State1);
            State2 = u.State2 is null ? 0 : TensorMemory.DataPointer(u.State2);
            Absmax1 = u.Absmax1 is null ? 0 : TensorMemory.DataPointer(u.Absmax1);
            Absmax2 = u.Absmax2 is null ? 0 : TensorMemory.DataPointer(u.Absmax2);
            Qmap1 = u.Qmap1 is null ? 0 : TensorMemory.DataPointer(u.Qmap1);
            Qmap2 = u.Qmap2 is null ? 0 : TensorMemory.DataPointer(u.Qmap2);
            Is8bit = u.Is8bit;
            DType = u.Param.dtype switch
            {
                ScalarType.Float32 => 0,
                ScalarType.BFloat16 => 1,
                _ => 2,
            };
        }

        public nint Param { get; }

        public nint Grad { get; }

        public nint State1 { get; }

        public nint State2 { get; }

        public nint Absmax1 { get; }

        public nint Absmax2 { get; }

        public nint Qmap1 { get; }

        public nint Qmap2 { get; }

        public bool Is8bit { get; }

        /// <summary>ElementIO's dtype code: 0 f32, 1 bf16, 2 f16.</summary>
        public int DType { get; }
    }
}
