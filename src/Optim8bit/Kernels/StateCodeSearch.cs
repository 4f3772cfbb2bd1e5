using System.Runtime.CompilerServices;

namespace BnbDist.Optim8bit.Kernels;

/// <summary>
/// <see cref="StateQuantizer.NearestUpper"/> (the number of f32 midpoints at or below x; NaN gives 0) without a
/// search per element: x is bucketed by sign, exponent and top seven mantissa bits, each bucket stores the answer at
/// its low end and the one midpoint that can lie inside it, so one table load and one comparison finish the job.
/// </summary>
/// <remarks>
/// The count is monotone in x, so a bucket whose two ends give the same count is constant and one whose ends differ by
/// one is decided by that single midpoint: the result equals the binary search for every x. Buckets that hold two or
/// more midpoints (none for bitsandbytes' dynamic maps) fall back to the binary search. Tables for the two standard
/// maps are built once; any other code gets its own. (Backends' CodeSearch buckets the same way for the quantize ops,
/// whose exact midpoints go to the even index; optimizer states send them to the upper code.)
/// </remarks>
internal sealed class StateCodeSearch
{
    private const int MantissaBits = 7;
    private const int Shift = 23 - MantissaBits;
    private const int MinMagBits = 0x33800000; // 2^-24: smaller magnitudes share bucket 0
    private const int MaxMagBits = 0x40000000; // 2.0: larger magnitudes (and inf) share the last bucket
    private const int Buckets = ((MaxMagBits - MinMagBits) >> Shift) + 2;
    private const int Fallback = 1 << 8;

    private static readonly StateCodeSearch SignedMap = new(CodeBooks.CreateDynamicMap(true));
    private static readonly StateCodeSearch UnsignedMap = new(CodeBooks.CreateDynamicMap(false));

    private readonly float[] code;
    private readonly float[] mids = new float[255];
    private readonly int[] low = new int[2 * Buckets]; // count at the bucket's low end, | Fallback when it spans 2+ midpoints
    private readonly float[] split = new float[2 * Buckets]; // the midpoint inside the bucket (NaN when none)

    private StateCodeSearch(float[] code)
    {
        this.code = code;
        StateQuantizer.Midpoints(code, mids);
        for (var b = 0; b < Buckets; b++)
        {
            var (lo, hi) = Magnitudes(b);
            Fill(b, StateQuantizer.NearestUpper(lo, mids), StateQuantizer.NearestUpper(hi, mids));
            Fill(Buckets + b, StateQuantizer.NearestUpper(-hi, mids), StateQuantizer.NearestUpper(-lo, mids));
        }
    }

    /// <summary>The search for <paramref name="qmap"/>: a shared one for bitsandbytes' dynamic maps, else a new one.</summary>
    public static StateCodeSearch For(ReadOnlySpan<float> qmap) =>
        qmap.SequenceEqual(SignedMap.code) ? SignedMap
        : qmap.SequenceEqual(UnsignedMap.code) ? UnsignedMap
        : new StateCodeSearch(qmap.ToArray());

    /// <summary>The f32 midpoints of the code.</summary>
    public ReadOnlySpan<float> Mids => mids;

    /// <summary>Equals <see cref="StateQuantizer.NearestUpper"/>(x, mids) for every x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Index(float x)
    {
        if (float.IsNaN(x))
        {
            return 0;
        }

        var bits = BitConverter.SingleToInt32Bits(x);
        var mag = Math.Clamp(bits & 0x7FFFFFFF, MinMagBits - (1 << Shift), MaxMagBits);
        var e = ((mag - (MinMagBits - (1 << Shift))) >> Shift) + ((bits >>> 31) * Buckets);
        var lo = low[e];
        return lo < Fallback ? lo + (split[e] <= x ? 1 : 0) : StateQuantizer.NearestUpper(x, mids);
    }

    private void Fill(int e, int countAtLow, int countAtHigh)
    {
        low[e] = countAtHigh - countAtLow > 1 ? Fallback : countAtLow;
        split[e] = countAtHigh > countAtLow ? mids[countAtLow] : float.NaN; // NaN: never at or below any x
    }

    /// <summary>The smallest and largest magnitude of bucket <paramref name="b"/>.</summary>
    private static (float Lo, float Hi) Magnitudes(int b)
    {
        if (b == 0)
        {
            return (0f, BitConverter.Int32BitsToSingle(MinMagBits - 1));
        }

        if (b == Buckets - 1)
        {
            return (BitConverter.Int32BitsToSingle(MaxMagBits), float.PositiveInfinity);
        }

        var first = MinMagBits + ((b - 1) << Shift);
        return (BitConverter.Int32BitsToSingle(first), BitConverter.Int32BitsToSingle(first + (1 << Shift) - 1));
    }
}
