using System.Runtime.CompilerServices;

namespace BnbDist.Optim8bit.Kernels;

/// <summary>
/// One step of bitsandbytes' 32-bit 1-state optimizers (kOptimizer32bit1State): SGD momentum, Lion and RMSprop with
/// f32 state, used by the 32-bit optimizers and for parameters below <c>min_8bit_size</c>.
/// </summary>
/// <remarks>
/// The kernel computes the step as <c>update_scale·(lr·…)</c> with a run-time update_scale, so nvcc cannot fuse lr into
/// the parameter update: momentum and RMSprop round <c>lr·s</c> (or <c>lr·g/(√s+ε)</c>) first and then add (this
/// reproduces bitsandbytes' SGD trajectory bit for bit), while Lion's decoupled decay and step form one FMA,
/// <c>p·(1−lr·wd) − lr·sign(…)</c> (bit for bit on its Lion trajectory). Coupled weight decay is folded into the
/// gradient, which the kernel keeps in the parameter dtype.
/// </remarks>
internal static class OneState32bit
{
    /// <summary>Applies one step in place to f32 parameters. <paramref name="beta1"/> is the momentum, Lion's β1 or RMSprop's α.</summary>
    public static void Step(UpdateRule rule, Span<float> param, ReadOnlySpan<float> grad, Span<float> state1,
        float beta1, float beta2, float eps, float lr, float weightDecay, int step) =>
        Step<Float32Rounding>(rule, param, grad, state1, beta1, beta2, eps, lr, weightDecay, step);

    /// <summary>Applies one step in place; <typeparamref name="TRound"/> rounds to the parameter's dtype.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tiered compilation's unoptimized first calls
    public static void Step<TRound>(UpdateRule rule, Span<float> param, ReadOnlySpan<float> grad, Span<float> state1,
        float beta1, float beta2, float eps, float lr, float weightDecay, int step)
        where TRound : struct, IParamRounding
    {
        if (rule == UpdateRule.Adam)
        {
            throw new ArgumentOutOfRangeException(nameof(rule), rule, "not a 1-state rule");
        }

        var decay = MathF.FusedMultiplyAdd(-lr, weightDecay, 1f);
        for (var i = 0; i < param.Length; i++)
        {
            var g = grad[i];
            var p = param[i];
            var s = state1[i];
            if (weightDecay > 0f && rule != UpdateRule.Lion)
            {
                g = TRound.Round(MathF.FusedMultiplyAdd(p, weightDecay, g));
            }

            switch (rule)
            {
                case UpdateRule.Momentum:
                    s = step == 1 ? g : MathF.FusedMultiplyAdd(s, beta1, g);
                    p = TRound.Round(p + (-lr * s));
                    break;
                case UpdateRule.Lion:
                    p = TRound.Round(MathF.FusedMultiplyAdd(p, decay, -lr * OneState8bitBlockwise.Sgn(MathF.FusedMultiplyAdd(s, beta1, (1f - beta1) * g))));
                    s = MathF.FusedMultiplyAdd(s, beta2, (1f - beta2) * g);
                    break;
                default: // RmsProp (checked above)
                    s = MathF.FusedMultiplyAdd(s, beta1, (1f - beta1) * g * g);
                    p = TRound.Round(p - (lr * (g / (MathF.Sqrt(s) + eps))));
                    break;
            }

            param[i] = p;
            state1[i] = s;
        }
    }
}
