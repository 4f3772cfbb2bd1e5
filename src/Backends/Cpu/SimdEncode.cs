using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnbDist.Backends.Cpu;

/// <summary>
/// AVX2 versions of the per-block encoders: 32 elements per step, same arithmetic and the same results as the scalar
/// <see cref="CodeSearch.Index"/> and <see cref="FourBitTables.Encode"/> (the tests run both and compare).
/// </summary>
internal static unsafe class SimdEncode
{
    /// <summary>Whether the AVX2 paths can run here (and are not switched off for testing).</summary>
    public static bool Enabled => Avx2.IsSupported && !ForceScalar;

    /// <summary>Test hook: run the scalar paths even where AVX2 exists.</summary>
    internal static bool ForceScalar { get; set; }

    /// <summary>codes[i] = search.Index(x[i] * inv) for the first (len / 32) * 32 elements; returns how many were done.</summary>
    public static int Quantize8(float* x, int len, float inv, CodeSearch search, byte* codes)
    {
        if (!search.IsBranchFree)
        {
            return 0;
        }

        var vinv = Vector256.Create(inv);
        var done = len & ~31;
        fixed (long* pairs = search.PackedPairs)
        {
            for (var i = 0; i < done; i += 32)
            {
                var a = Index8(Vector256.Load(x + i) * vinv, pairs);
                var b = Index8(Vector256.Load(x + i + 8) * vinv, pairs);
                var c = Index8(Vector256.Load(x + i + 16) * vinv, pairs);
                var d = Index8(Vector256.Load(x + i + 24) * vinv, pairs);
                StoreBytes(a, b, c, d, codes + i);
            }
        }

        return done;
    }

    /// <summary>Packed 4-bit codes of x[i] * inv for the first (len / 32) * 32 elements (len even); returns how many were done.</summary>
    public static int Quantize4(float* x, int len, float inv, QuantType type, byte* packed)
    {
        var vinv = Vector256.Create(inv);
        var done = len & ~31;
        for (var i = 0; i < done; i += 32)
        {
            Vector256<int> a, b, c, d;
            if (type == QuantType.NF4)
            {
                a = NF4(Vector256.Load(x + i) * vinv);
                b = NF4(Vector256.Load(x + i + 8) * vinv);
                c = NF4(Vector256.Load(x + i + 16) * vinv);
                d = NF4(Vector256.Load(x + i + 24) * vinv);
            }
            else
            {
                a = FP4(Vector256.Load(x + i) * vinv);
                b = FP4(Vector256.Load(x + i + 8) * vinv);
                c = FP4(Vector256.Load(x + i + 16) * vinv);
                d = FP4(Vector256.Load(x + i + 24) * vinv);
            }

            // 32 codes as bytes in element order; then each little-endian pair (even, odd) becomes (even << 4) | odd.
            var bytes = Narrow(a, b, c, d);
            var pairs = bytes.AsUInt16();
            var merged = ((pairs << 4) & Vector256.Create((ushort)0xF0)) | (pairs >> 8);
            var lo = merged.GetLower();
            var hi = merged.GetUpper();
            Vector128.Narrow(lo, hi).Store(packed + (i >> 1));
        }

        return done;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Index8(Vector256<float> xn, long* pairs)
    {
        var bits = xn.AsInt32();
        var mag = bits & Vector256.Create(0x7FFFFFFF);
        var bucket = CodeSearch.BucketOf(mag);
        var table = bucket + (Vector256.ShiftRightArithmetic(bits, 31) & Vector256.Create(CodeSearch.BucketCount));
        // One 8-byte gather per element instead of two 4-byte ones (half the gathered loads). Elements (0,1,4,5) and
        // (2,3,6,7) go to the two gathers so that the in-lane shuffles return midpoints and entries in element order.
        var order = Avx2.PermuteVar8x32(table, Vector256.Create(0, 1, 4, 5, 2, 3, 6, 7));
        var ga = Avx2.GatherVector256(pairs, order.GetLower(), 8).AsSingle();
        var gb = Avx2.GatherVector256(pairs, order.GetUpper(), 8).AsSingle();
        var mid = Avx.Shuffle(ga, gb, 0x88);
        var entry = Avx.Shuffle(ga, gb, 0xDD).AsInt32();
        var lo = entry & Vector256.Create(0xFF);
        var span = Vector256.ShiftRightLogical(entry, 8);
        var odd = Vector256.Equals(lo & Vector256.Create(1), Vector256.Create(1));
        var pass = Vector256.GreaterThan(xn, mid).AsInt32() | (Vector256.Equals(xn, mid).AsInt32() & odd);
        var idx = lo + (span & pass & Vector256.Create(1));
        var nan = Vector256.Equals(xn, xn).AsInt32(); // all ones except for NaN
        return idx & nan;
    }

    private static ReadOnlySpan<float> NF4T => FourBitTables.NF4Thresholds;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> NF4(Vector256<float> xn)
    {
        var t = NF4T;
        var count = Vector256<int>.Zero;
        for (var k = 0; k < 15; k++)
        {
            count -= Vector256.GreaterThan(xn, Vector256.Create(t[k])).AsInt32();
        }

        return count;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> FP4(Vector256<float> xn)
    {
        var a = Vector256.Abs(xn);
        var rank = Vector256<int>.Zero;
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.00260417f)).AsInt32();
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.0859375f)).AsInt32();
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.20833333f)).AsInt32();
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.29166667f)).AsInt32();
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.4166667f)).AsInt32();
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.583333f)).AsInt32();
        rank -= Vector256.GreaterThan(a, Vector256.Create(0.8333333f)).AsInt32();
        var code = Avx2.PermuteVar8x32(Vector256.Create(0, 1, 6, 7, 4, 5, 2, 3), rank);
        var sign = Vector256.LessThan(xn, Vector256<float>.Zero).AsInt32() & Vector256.Create(8);
        return code | sign;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Narrow(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d)
    {
        // Vector256.Narrow works lane-wise across the two inputs in element order (lower half from the first).
        var ab = Vector256.Narrow(a.AsUInt32(), b.AsUInt32());
        var cd = Vector256.Narrow(c.AsUInt32(), d.AsUInt32());
        return Vector256.Narrow(ab, cd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBytes(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d, byte* dst) =>
        Narrow(a, b, c, d).Store(dst);
}
