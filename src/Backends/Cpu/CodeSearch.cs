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

    private readonly float[] mids = new float[255];
    private readonly byte[] posLo = new byte[Buckets];
    private readonly byte[] posHi = new byte[Buckets];
    private readonly byte[] negLo = new byte[Buckets];
    private readonly byte[] negHi = new byte[Buckets];

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

        for (var b = 0; b < Buckets; b++)
        {
            var (lo, hi) = BucketRange(b);
            posLo[b] = (byte)ReferenceIndex(lo, mids);
            posHi[b] = (byte)ReferenceIndex(hi, mids);
            negLo[b] = (byte)ReferenceIndex(-hi, mids);
            negHi[b] = (byte)ReferenceIndex(-lo, mids);
        }
    }

    /// <summary>The code index of a normalized value.</summary>
    public int Index(float x)
    {
        if (float.IsNaN(x))
        {
            return 0;
        }

        var bits = BitConverter.SingleToInt32Bits(x);
        var b = Bucket(bits & 0x7FFFFFFF);
        int idx, hi;
        if (bits >= 0)
        {
            idx = posLo[b];
            hi = posHi[b];
        }
        else
        {
            idx = negLo[b];
            hi = negHi[b];
        }

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

    private static int Bucket(int magBits)
    {
        if (magBits < MinMagBits)
        {
            return 0;
        }

        if (magBits >= MaxMagBits)
        {
            return Buckets - 1;
        }

        return 1 + ((magBits - MinMagBits) >> Shift);
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
