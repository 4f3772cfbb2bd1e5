using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace BnbDist.Backends.Cpu;

/// <summary>
/// Exact nearest-code search over an ascending 256-entry code book, as bitsandbytes' CUDA kernel decides it:
/// nearest by f32 midpoints, an exact midpoint goes to the even index, NaN goes to index 0.
/// </summary>
/// <remarks>
/// A plain binary search costs eight dependent comparisons per element. Instead, |x| is bucketed by its exponent
/// and top seven mantissa bits; each bucket stores the index range its values can map to (the reference rule is
/// monotone in x, so the range's ends are the answers for the bucket's ends), and a short walk over the midpoints
/// inside that range finishes the job. The result equals <see cref="ReferenceIndex"/> for any code book.
/// </remarks>
public sealed class CodeSearch
{
    private const int MantissaBits = 7;
    private const int Shift = 23 - MantissaBits;
    private const int MinMagBits = 0x33800000; // 2^-24: everything below shares bucket 0
    private const int MaxMagBits = 0x40000000; // 2.0: everything at or above shares the last bucket
    private const int Buckets = ((MaxMagBits - MinMagBits) >> Shift) + 2;

    private readonly float[] mids = new float[256];

    // Per bucket (positive and negative halves): the lowest possible index, how many midpoints the bucket spans,
    // and the first of those midpoints. Spans of 0 or 1 (every bucket of bitsandbytes' maps) resolve without a branch.
    private readonly byte[] posLo = new byte[Buckets];
    private readonly byte[] posSpan = new byte[Buckets];
    private readonly float[] posMid = new float[Buckets];
    private readonly byte[] negLo = new byte[Buckets];
    private readonly byte[] negSpan = new byte[Buckets];
    private readonly float[] negMid = new float[Buckets];

    /// <summary>Builds the search tables for <paramref name="code"/> (256 ascending values).</summary>
    public CodeSearch(ReadOnlySpan<float> code)
    {
        if (code.Length != 256)
        {
            throw new ArgumentException($"code must have 256 entries; got {code.Length}.", nameof(code));
        }

        for (var j = 0; j < 255; j++)
        {
            mids[j] = (code[j] + code[j + 1]) * 0.5f;
        }

        mids[255] = float.PositiveInfinity; // sentinel: never passed
        var m = mids.AsSpan(0, 255);
        for (var b = 0; b < Buckets; b++)
        {
            var (lo, hi) = BucketRange(b);
            Fill(b, ReferenceIndex(lo, m), ReferenceIndex(hi, m), posLo, posSpan, posMid);
            Fill(b, ReferenceIndex(-hi, m), ReferenceIndex(-lo, m), negLo, negSpan, negMid);
        }

        IsBranchFree = posSpan.All(s => s <= 1) && negSpan.All(s => s <= 1);
        for (var b = 0; b < Buckets; b++)
        {
            PackedEntries[b] = posLo[b] | (posSpan[b] << 8);
            BucketMids[b] = posMid[b];
            PackedEntries[Buckets + b] = negLo[b] | (negSpan[b] << 8);
            BucketMids[Buckets + b] = negMid[b];
        }

        for (var b = 0; b < 2 * Buckets; b++)
        {
            PackedPairs[b] = (long)BitConverter.SingleToUInt32Bits(BucketMids[b]) | ((long)PackedEntries[b] << 32);
        }
    }

    /// <summary>Whether every bucket spans at most one midpoint (then <see cref="Index"/> never loops).</summary>
    public bool IsBranchFree { get; private set; }

    /// <summary>Number of buckets per sign.</summary>
    internal const int BucketCount = Buckets;

    /// <summary>SIMD table: lo | span &lt;&lt; 8 for the positive buckets, then the negative ones.</summary>
    internal int[] PackedEntries { get; } = new int[2 * Buckets];

    /// <summary>SIMD table: the first midpoint of each bucket, positive buckets then negative ones.</summary>
    internal float[] BucketMids { get; } = new float[2 * Buckets];

    /// <summary>SIMD table: both of the above in one 8-byte entry (midpoint bits low, packed entry high), so one gather fetches both.</summary>
    internal long[] PackedPairs { get; } = new long[2 * Buckets];

    /// <summary>The bucket of a magnitude's bits, eight lanes at a time (the same mapping as the scalar path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static System.Runtime.Intrinsics.Vector256<int> BucketOf(System.Runtime.Intrinsics.Vector256<int> mag)
    {
        var c = System.Runtime.Intrinsics.Vector256.Min(System.Runtime.Intrinsics.Vector256.Max(mag,
            System.Runtime.Intrinsics.Vector256.Create(MinMagBits - (1 << Shift))), System.Runtime.Intrinsics.Vector256.Create(MaxMagBits));
        return System.Runtime.Intrinsics.Vector256.ShiftRightLogical(c - System.Runtime.Intrinsics.Vector256.Create(MinMagBits - (1 << Shift)), Shift);
    }

    /// <summary>The code index of a normalized value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Index(float x)
    {
        var bits = BitConverter.SingleToInt32Bits(x);
        var b = Bucket(bits & 0x7FFFFFFF);
        ref var lo = ref MemoryMarshal.GetArrayDataReference(bits >= 0 ? posLo : negLo);
        ref var span = ref MemoryMarshal.GetArrayDataReference(bits >= 0 ? posSpan : negSpan);
        ref var mid = ref MemoryMarshal.GetArrayDataReference(bits >= 0 ? posMid : negMid);
        int idx = Unsafe.Add(ref lo, b);
        int n = Unsafe.Add(ref span, b);
        var m = Unsafe.Add(ref mid, b);
        if (n <= 1)
        {
            // Passing the midpoint: x above it, or exactly on it with an odd index (ties go to the even index).
            // NaN passes nothing and lands in the top bucket, whose span is 0 at index 255, so NaN is handled below.
            var pass = (x > m) | ((x == m) & ((idx & 1) == 1));
            idx += n & (pass ? 1 : 0);
            return float.IsNaN(x) ? 0 : idx;
        }

        return float.IsNaN(x) ? 0 : Walk(x, idx, idx + n);
    }

    private int Walk(float x, int idx, int hi)
    {
        while (idx < hi)
        {
            var m = mids[idx];
            if (x > m || (x == m && (idx & 1) == 1))
            {
                idx++;
            }
            else
            {
                break;
            }
        }

        return idx;
    }

    /// <summary>The reference rule, by binary search: the number of midpoints x passes (a tie passes an odd index).</summary>
    public static int ReferenceIndex(float x, ReadOnlySpan<float> mids)
    {
        if (float.IsNaN(x))
        {
            return 0;
        }

        int lo = 0, hi = mids.Length; // count of midpoints strictly below x
        while (lo < hi)
        {
            var m = (lo + hi) >> 1;
            if (mids[m] < x)
            {
                lo = m + 1;
            }
            else
            {
                hi = m;
            }
        }

        if (lo < mids.Length && mids[lo] == x && (lo & 1) == 1)
        {
            lo++;
        }

        return lo;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Bucket(int magBits)
    {
        // Clamp into [MinMagBits - 1, MaxMagBits] without branches, then shift: bucket 0 below 2^-24, the last at 2.0 and above.
        var c = Math.Clamp(magBits, MinMagBits - (1 << Shift), MaxMagBits);
        return (c - MinMagBits + (1 << Shift)) >> Shift;
    }

    private void Fill(int b, int lo, int hi, byte[] los, byte[] spans, float[] mid)
    {
        los[b] = (byte)lo;
        spans[b] = (byte)Math.Min(255, hi - lo);
        mid[b] = mids[lo];
    }

    private static (float Lo, float Hi) BucketRange(int b)
    {
        if (b == 0)
        {
            return (0f, BitConverter.Int32BitsToSingle(MinMagBits - 1));
        }

        if (b == Buckets - 1)
        {
            return (BitConverter.Int32BitsToSingle(MaxMagBits), float.PositiveInfinity);
        }

        var start = MinMagBits + ((b - 1) << Shift);
        return (BitConverter.Int32BitsToSingle(start), BitConverter.Int32BitsToSingle(start + (1 << Shift) - 1));
    }
}
