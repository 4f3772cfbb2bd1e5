namespace BnbDist.Optim8bit.Kernels;

/// <summary>Requantization of 8-bit optimizer state, shared by every blockwise update rule.</summary>
internal static class StateQuantizer
{
    /// <summary>f32 midpoints between consecutive entries of a 256-entry code.</summary>
    public static void Midpoints(ReadOnlySpan<float> code, Span<float> mids)
    {
        for (var j = 0; j < 255; j++)
        {
            mids[j] = (code[j] + code[j + 1]) * 0.5f;
        }
    }

    /// <summary>Number of midpoints at or below x (an exact midpoint goes to the upper code); NaN gives 0.</summary>
    public static int NearestUpper(float x, ReadOnlySpan<float> mids)
    {
        if (float.IsNaN(x))
        {
            return 0;
        }

        int lo = 0, hi = mids.Length;
        while (lo < hi)
        {
            var mid = (lo + hi) >> 1;
            if (mids[mid] <= x)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    /// <summary>
    /// The code of a signed state value (x / absmax), with bitsandbytes' sign fix: if the nearest code has the other sign
    /// (a small negative value landing on +0), step one code toward the value's sign. As in the CUDA kernel, the step
    /// direction is <c>x &gt; 0 ? +1 : −1</c> on an unsigned char, so a NaN state wraps the way it does there.
    /// </summary>
    public static byte Signed(float x, float absmax, ReadOnlySpan<float> code, ReadOnlySpan<float> mids)
    {
        var c = NearestUpper(x / absmax, mids);
        if (float.IsNegative(code[c]) != float.IsNegative(x))
        {
            c += x > 0f ? 1 : -1;
        }

        return unchecked((byte)c);
    }

    /// <summary>CUDA's <c>fmaxf(max, |x|)</c>: a NaN operand is ignored rather than propagated.</summary>
    public static float MaxAbs(float max, float x)
    {
        var a = MathF.Abs(x);
        return a > max ? a : max;
    }

    /// <summary>
    /// The absmax stored for a block. An infinite block maximum (a moment that overflowed f32, e.g. v from gradients
    /// of 1e30) is stored as float.MaxValue: bitsandbytes stores +inf, which turns every code of the block into
    /// 0·inf = NaN at the next step. Any finite maximum is stored unchanged, so finite trajectories stay bit-identical.
    /// </summary>
    public static float StoredAbsmax(float max) => float.IsPositiveInfinity(max) ? float.MaxValue : max;
}
