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
    /// (a small negative value landing on +0), step one code toward the value's sign.
    /// </summary>
    public static byte Signed(float x, float absmax, ReadOnlySpan<float> code, ReadOnlySpan<float> mids)
    {
        var c = NearestUpper(x / absmax, mids);
        if (float.IsNegative(code[c]) != float.IsNegative(x))
        {
            c += float.IsNegative(x) ? -1 : 1;
        }

        return (byte)c;
    }
}
