using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

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
    /// <remarks>
    /// A branch-free binary search over the 255 ascending midpoints: the comparisons of a quantization search are
    /// unpredictable, and eight mispredicted branches per state element cost more than the rest of the update.
    /// NaN compares false everywhere, so it lands on 0.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestUpper(float x, ReadOnlySpan<float> mids)
    {
        ref var m = ref MemoryMarshal.GetReference(mids[..255]);
        var i = 0;
        i += Bit(Unsafe.Add(ref m, 127) <= x) << 7;
        i += Bit(Unsafe.Add(ref m, i + 63) <= x) << 6;
        i += Bit(Unsafe.Add(ref m, i + 31) <= x) << 5;
        i += Bit(Unsafe.Add(ref m, i + 15) <= x) << 4;
        i += Bit(Unsafe.Add(ref m, i + 7) <= x) << 3;
        i += Bit(Unsafe.Add(ref m, i + 3) <= x) << 2;
        i += Bit(Unsafe.Add(ref m, i + 1) <= x) << 1;
        i += Bit(Unsafe.Add(ref m, i) <= x);
        return i;
    }

    /// <summary>
    /// The code of a signed state value (x / absmax), with bitsandbytes' sign fix: if the nearest code has the other sign
    /// (a small negative value landing on +0), step one code toward the value's sign. As in the CUDA kernel, the step
    /// direction is <c>x &gt; 0 ? +1 : −1</c> on an unsigned char, so a NaN state wraps the way it does there.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Signed(float x, float absmax, ReadOnlySpan<float> code, StateCodeSearch search)
    {
        var c = search.Index(x / absmax);
        if (float.IsNegative(code[c]) != float.IsNegative(x))
        {
            c += x > 0f ? 1 : -1;
        }

        return unchecked((byte)c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Bit(bool b) => Unsafe.As<bool, byte>(ref b);

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
