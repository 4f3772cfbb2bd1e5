using System.Runtime.CompilerServices;

namespace BnbDist.Optim8bit.Kernels;

/// <summary>
/// One step of bitsandbytes' 8-bit blockwise Adam/AdamW (kOptimizerStatic8bit2StateBlockwise) on the CPU: per block of
/// 256 elements, dequantize both moments, update them in f32, update the parameter, take the new absmax of each moment
/// over the block, and requantize.
/// </summary>
/// <remarks>
/// Rounding follows the CUDA kernel as nvcc compiles it: the moment updates and the parameter step are single-rounding
/// FMAs, and the parameter is stored in its dtype after the step and again after weight decay. Requantization is
/// nearest-by-midpoint with exact midpoints going to the upper code, plus bitsandbytes' sign fix for the first moment
/// (a small negative m never lands on +0). Against bitsandbytes' golden 12-step trajectories this reproduces every final
/// state byte; parameters agree to ‖Δp‖/‖p‖ ≈ 2e-6 (bitsandbytes' fast-math pow/sqrt/division). Blocks are
/// independent, so any 256-aligned slice of a tensor can be stepped on its own (the multi-threaded backend does).
/// </remarks>
internal static class Adam8bitBlockwise
{
    /// <summary>Elements per quantization block of optimizer state.</summary>
    public const int BlockSize = 256;

    /// <summary>Applies one step in place to f32 parameters.</summary>
    public static void Step(Span<float> param, ReadOnlySpan<float> grad, Span<byte> state1, Span<byte> state2,
        Span<float> absmax1, Span<float> absmax2, ReadOnlySpan<float> qmap1, ReadOnlySpan<float> qmap2,
        float beta1, float beta2, float eps, float lr, float weightDecay, int step) =>
        Step<Float32Rounding>(param, grad, state1, state2, absmax1, absmax2, qmap1, qmap2, beta1, beta2, eps, lr, weightDecay, step);

    /// <summary>Applies one step in place; <typeparamref name="TRound"/> rounds to the parameter's dtype.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tiered compilation's unoptimized first calls
    public static void Step<TRound>(Span<float> param, ReadOnlySpan<float> grad, Span<byte> state1, Span<byte> state2,
        Span<float> absmax1, Span<float> absmax2, ReadOnlySpan<float> qmap1, ReadOnlySpan<float> qmap2,
        float beta1, float beta2, float eps, float lr, float weightDecay, int step)
        where TRound : struct, IParamRounding
    {
        var n = param.Length;
        var correction1 = 1f - MathF.Pow(beta1, step);
        var correction2 = MathF.Sqrt(1f - MathF.Pow(beta2, step));
        var stepSize = -lr * correction2 / correction1;
        var decay = MathF.FusedMultiplyAdd(-lr, weightDecay, 1f);
        Span<float> m = stackalloc float[BlockSize];
        Span<float> v = stackalloc float[BlockSize];
        var search1 = StateCodeSearch.For(qmap1);
        var search2 = StateCodeSearch.For(qmap2);

        for (var start = 0; start < n; start += BlockSize)
        {
            var len = Math.Min(BlockSize, n - start);
            var b = start / BlockSize;
            float max1 = 0f, max2 = 0f;
            for (var k = 0; k < len; k++)
            {
                var i = start + k;
                var g = grad[i];
                if (!float.IsFinite(g))
                {
                    // bitsandbytes: a non-finite gradient zeroes the element's moments and leaves the parameter alone.
                    m[k] = 0f;
                    v[k] = 0f;
                    continue;
                }

                var mk = MathF.FusedMultiplyAdd(qmap1[state1[i]] * absmax1[b], beta1, (1f - beta1) * g);
                var vk = MathF.FusedMultiplyAdd(qmap2[state2[i]] * absmax2[b], beta2, (1f - beta2) * g * g);
                m[k] = mk;
                v[k] = vk;
                max1 = StateQuantizer.MaxAbs(max1, mk);
                max2 = StateQuantizer.MaxAbs(max2, vk);
                var denom = MathF.FusedMultiplyAdd(correction2, eps, MathF.Sqrt(vk));
                var p = TRound.Round(MathF.FusedMultiplyAdd(stepSize, mk / denom, param[i]));
                param[i] = weightDecay > 0f ? TRound.Round(p * decay) : p;
            }

            max1 = StateQuantizer.StoredAbsmax(max1);
            max2 = StateQuantizer.StoredAbsmax(max2);
            absmax1[b] = max1;
            absmax2[b] = max2;
            for (var k = 0; k < len; k++)
            {
                var i = start + k;
                state1[i] = StateQuantizer.Signed(m[k], max1, qmap1, search1);
                state2[i] = (byte)search2.Index(v[k] / max2);
            }
        }
    }
}
