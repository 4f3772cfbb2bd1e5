using System.Runtime.CompilerServices;

namespace BnbDist.Optim8bit.Kernels;

/// <summary>
/// One step of bitsandbytes' 32-bit Adam/AdamW (kOptimizer32bit2State), used for 32-bit optimizers and for parameters
/// below <c>min_8bit_size</c>: f32 moments, the same FMA-contracted update and decoupled weight decay after the step,
/// the parameter stored in its dtype after the step and after the decay. No non-finite check (the kernel has none).
/// </summary>
internal static class TwoState32bit
{
    /// <summary>Applies one step in place to f32 parameters.</summary>
    public static void Step(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v,
        float beta1, float beta2, float eps, float lr, float weightDecay, int step) =>
        Step<Float32Rounding>(param, grad, m, v, beta1, beta2, eps, lr, weightDecay, step);

    /// <summary>Applies one step in place; <typeparamref name="TRound"/> rounds to the parameter's dtype.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tiered compilation's unoptimized first calls
    public static void Step<TRound>(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v,
        float beta1, float beta2, float eps, float lr, float weightDecay, int step)
        where TRound : struct, IParamRounding
    {
        var correction1 = 1f - MathF.Pow(beta1, step);
        var correction2 = MathF.Sqrt(1f - MathF.Pow(beta2, step));
        var stepSize = -lr * correction2 / correction1;
        var decay = MathF.FusedMultiplyAdd(-lr, weightDecay, 1f);
        for (var i = 0; i < param.Length; i++)
        {
            var g = grad[i];
            var mi = MathF.FusedMultiplyAdd(m[i], beta1, (1f - beta1) * g);
            var vi = MathF.FusedMultiplyAdd(v[i], beta2, (1f - beta2) * g * g);
            m[i] = mi;
            v[i] = vi;
            var p = TRound.Round(MathF.FusedMultiplyAdd(stepSize, mi / MathF.FusedMultiplyAdd(eps, correction2, MathF.Sqrt(vi)), param[i]));
            param[i] = weightDecay > 0f ? TRound.Round(p * decay) : p;
        }
    }
}
