using System.Runtime.CompilerServices;

namespace BnbDist.Optim8bit.Kernels;

/// <summary>
/// One step of bitsandbytes' 1-state 8-bit blockwise optimizers (kOptimizerStatic8bit1StateBlockwise) on the CPU, with
/// the same FMA contraction, requantization and sign fix as <see cref="Adam8bitBlockwise"/>.
/// </summary>
/// <remarks>
/// Kernel details kept on purpose: Lion's weight decay and its step <c>lr·sign(…)</c> are each stored in the parameter
/// dtype before the subtraction; RMSprop divides the raw gradient (without the coupled weight decay the state saw).
/// Non-finite gradients are not filtered (the kernel does not filter them); a NaN state is left out of the block's absmax
/// (CUDA's fmaxf), so it cannot poison the other elements of its block.
/// </remarks>
internal static class OneState8bitBlockwise
{
    /// <summary>Applies one step in place to f32 parameters. <paramref name="beta1"/> is the momentum, Lion's β1 or RMSprop's α.</summary>
    public static void Step(UpdateRule rule, Span<float> param, ReadOnlySpan<float> grad, Span<byte> state1, Span<float> absmax1,
        ReadOnlySpan<float> qmap1, float beta1, float beta2, float eps, float lr, float weightDecay, int step) =>
        Step<Float32Rounding>(rule, param, grad, state1, absmax1, qmap1, beta1, beta2, eps, lr, weightDecay, step);

    /// <summary>Applies one step in place; <typeparamref name="TRound"/> rounds to the parameter's dtype.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tiered compilation's unoptimized first calls
    public static void Step<TRound>(UpdateRule rule, Span<float> param, ReadOnlySpan<float> grad, Span<byte> state1, Span<float> absmax1,
        ReadOnlySpan<float> qmap1, float beta1, float beta2, float eps, float lr, float weightDecay, int step)
        where TRound : struct, IParamRounding
    {
        if (rule == UpdateRule.Adam)
        {
            throw new ArgumentOutOfRangeException(nameof(rule), rule, "not a 1-state rule");
        }

        var n = param.Length;
        var decay = MathF.FusedMultiplyAdd(-lr, weightDecay, 1f);
        Span<float> s = stackalloc float[Adam8bitBlockwise.BlockSize];
        var search = StateCodeSearch.For(qmap1);

        for (var start = 0; start < n; start += Adam8bitBlockwise.BlockSize)
        {
            var len = Math.Min(Adam8bitBlockwise.BlockSize, n - start);
            var b = start / Adam8bitBlockwise.BlockSize;
            var max = 0f;
            for (var k = 0; k < len; k++)
            {
                var i = start + k;
                var g = grad[i];
                var p = param[i];
                var old = qmap1[state1[i]] * absmax1[b];
                float sk;
                switch (rule)
                {
                    case UpdateRule.Momentum:
                        if (weightDecay > 0f)
                        {
                            g = MathF.FusedMultiplyAdd(weightDecay, p, g);
                        }

                        sk = step == 1 ? g : MathF.FusedMultiplyAdd(old, beta1, g);
                        p = TRound.Round(MathF.FusedMultiplyAdd(-lr, sk, p));
                        break;
                    case UpdateRule.Lion:
                        if (weightDecay > 0f)
                        {
                            p = TRound.Round(p * decay);
                        }

                        var update = TRound.Round(lr * Sgn(MathF.FusedMultiplyAdd(old, beta1, (1f - beta1) * g)));
                        sk = MathF.FusedMultiplyAdd(old, beta2, (1f - beta2) * g);
                        p = TRound.Round(p - update);
                        break;
                    default: // RmsProp (checked above; no throw in the loop, which would keep the JIT from optimizing it)
                        var raw = g;
                        if (weightDecay > 0f)
                        {
                            g = MathF.FusedMultiplyAdd(weightDecay, p, g);
                        }

                        sk = MathF.FusedMultiplyAdd(old, beta1, (1f - beta1) * (g * g));
                        p = TRound.Round(MathF.FusedMultiplyAdd(-lr, raw / (MathF.Sqrt(sk) + eps), p));
                        break;
                }

                param[i] = p;
                s[k] = sk;
                max = StateQuantizer.MaxAbs(max, sk);
            }

            max = StateQuantizer.StoredAbsmax(max);
            absmax1[b] = max;
            for (var k = 0; k < len; k++)
            {
                state1[start + k] = StateQuantizer.Signed(s[k], max, qmap1, search);
            }
        }
    }

    /// <summary>CUDA's <c>sgn</c>: (0 &lt; x) − (x &lt; 0), so 0 and NaN give 0 (MathF.Sign throws on NaN).</summary>
    /// <remarks>Written with CopySign so that the only branch (x is 0 or NaN) is almost never taken: a branch on x's sign mispredicts half the time.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sgn(float x) => x < 0f || x > 0f ? MathF.CopySign(1f, x) : 0f;
}
