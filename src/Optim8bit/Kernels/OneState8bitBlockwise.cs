namespace BnbDist.Optim8bit.Kernels;

/// <summary>The 1-state update rules of bitsandbytes' 8-bit blockwise optimizers.</summary>
internal enum OneStateRule
{
    /// <summary>SGD with momentum: s = g at step 1, else s·β1 + g; p −= lr·s (weight decay coupled).</summary>
    Momentum,

    /// <summary>Lion: p·(1 − lr·wd), then p −= lr·sign(s·β1 + (1−β1)·g); s = s·β2 + (1−β2)·g.</summary>
    Lion,

    /// <summary>RMSprop: s = s·α + (1−α)·g²; p −= lr·g/(√s + ε) (weight decay coupled).</summary>
    RmsProp,
}

/// <summary>
/// One step of bitsandbytes' 1-state 8-bit blockwise optimizers (kOptimizerStatic8bit1StateBlockwise) on f32 data,
/// on the CPU, with the same FMA contraction, requantization and sign fix as <see cref="Adam8bitBlockwise"/>.
/// </summary>
internal static class OneState8bitBlockwise
{
    /// <summary>Applies one step in place. <paramref name="beta1"/> is the momentum, Lion's β1 or RMSprop's α.</summary>
    public static void Step(OneStateRule rule, Span<float> param, ReadOnlySpan<float> grad, Span<byte> state1, Span<float> absmax1,
        ReadOnlySpan<float> qmap1, float beta1, float beta2, float eps, float lr, float weightDecay, int step)
    {
        var n = param.Length;
        var decay = MathF.FusedMultiplyAdd(-lr, weightDecay, 1f);
        Span<float> s = stackalloc float[Adam8bitBlockwise.BlockSize];
        Span<float> mids = stackalloc float[255];
        StateQuantizer.Midpoints(qmap1, mids);

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
                    case OneStateRule.Momentum:
                        if (weightDecay > 0f)
                        {
                            g = MathF.FusedMultiplyAdd(weightDecay, p, g);
                        }

                        sk = step == 1 ? g : MathF.FusedMultiplyAdd(old, beta1, g);
                        p = MathF.FusedMultiplyAdd(-lr, sk, p);
                        break;
                    case OneStateRule.Lion:
                        if (weightDecay > 0f)
                        {
                            p *= decay;
                        }

                        var direction = MathF.FusedMultiplyAdd(old, beta1, (1f - beta1) * g);
                        p -= lr * MathF.Sign(direction);
                        sk = MathF.FusedMultiplyAdd(old, beta2, (1f - beta2) * g);
                        break;
                    default:
                        if (weightDecay > 0f)
                        {
                            g = MathF.FusedMultiplyAdd(weightDecay, p, g);
                        }

                        sk = MathF.FusedMultiplyAdd(old, beta1, (1f - beta1) * g * g);
                        p = MathF.FusedMultiplyAdd(-lr, g / (MathF.Sqrt(sk) + eps), p);
                        break;
                }

                param[i] = p;
                s[k] = sk;
                max = MathF.Max(max, MathF.Abs(sk));
            }

            absmax1[b] = max;
            for (var k = 0; k < len; k++)
            {
                state1[start + k] = StateQuantizer.Signed(s[k], max, qmap1, mids);
            }
        }
    }
}
