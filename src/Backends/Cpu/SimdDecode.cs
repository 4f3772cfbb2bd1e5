using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace BnbDist.Backends.Cpu;

/// <summary>
/// AVX2 versions of the dequantizers and the bf16 conversions: the same values as the scalar paths
/// (table[code] · scale rounded once to f32, then to bf16 with round-to-nearest-even).
/// </summary>
internal static unsafe class SimdDecode
{
    /// <summary>Widens bf16 to f32 (exact) for the first (count / 16) * 16 elements; returns how many were done.</summary>
    public static int LoadBFloat16(ushort* src, float* dst, int count)
    {
        if (!SimdEncode.Enabled)
        {
            return 0;
        }

        var done = count & ~15;
        for (var i = 0; i < done; i += 16)
        {
            var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
            (lo << 16).AsSingle().Store(dst + i);
            (hi << 16).AsSingle().Store(dst + i + 8);
        }

        return done;
    }

    /// <summary>out[i] = table[codes[i]] · scale for the first (count / 8) * 8 elements (f32 or bf16 out); returns how many were done.</summary>
    public static int Dequantize8(byte* codes, float* table, float scale, int count, void* output, int dtype)
    {
        if (!SimdEncode.Enabled || dtype == 2)
        {
            return 0;
        }

        var vs = Vector256.Create(scale);
        var done = count & ~7;
        for (var i = 0; i < done; i += 8)
        {
            var idx = Avx2.ConvertToVector256Int32(codes + i);
            Store(Avx2.GatherVector256(table, idx, 4) * vs, output, dtype, i);
        }

        return done;
    }

    /// <summary>Dequantizes packed 4-bit codes of elements [start, start + done) (start even); returns how many were done.</summary>
    public static int Dequantize4(byte* packed, long start, int count, Vector256<float> tableLo, Vector256<float> tableHi, float scale,
        void* output, int dtype)
    {
        if (!SimdEncode.Enabled || dtype == 2 || (start & 1) != 0)
        {
            return 0;
        }

        var vs = Vector256.Create(scale);
        var done = count & ~7;
        var p = packed + (start >> 1);
        for (var i = 0; i < done; i += 8)
        {
            // Four bytes hold eight codes: high nibble first.
            var bytes = Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(*(uint*)(p + (i >> 1))).AsByte());
            var dup = Avx2.PermuteVar8x32(bytes, Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3));
            var shift = Vector256.Create(4, 0, 4, 0, 4, 0, 4, 0);
            var code = Avx2.ShiftRightLogicalVariable(dup.AsUInt32(), shift.AsUInt32()).AsInt32() & Vector256.Create(0xF);
            var lo = Avx2.PermuteVar8x32(tableLo, code);
            var hi = Avx2.PermuteVar8x32(tableHi, code);
            var useHi = Vector256.GreaterThan(code, Vector256.Create(7)).AsSingle();
            var value = Vector256.ConditionalSelect(useHi, hi, lo);
            Store(value * vs, output, dtype, start + i);
        }

        return done;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> v, void* output, int dtype, long i)
    {
        if (dtype == 0)
        {
            // NaN as CUDA writes it (see ElementIO.CanonicalNaN).
            var isNum = Vector256.Equals(v, v);
            Vector256.ConditionalSelect(isNum, v, Vector256.Create(0x7FFFFFFF).AsSingle()).Store((float*)output + i);
            return;
        }

        // f32 → bf16, round to nearest even; NaN → 0x7FFF (as ElementIO.ToBFloat16).
        var bits = v.AsUInt32();
        var rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256.Create(1u))) >> 16;
        var nan = Vector256.Equals(v, v).AsUInt32();
        var result = (rounded & nan) | (Vector256.Create(0x7FFFu) & ~nan);
        var packed = Vector256.Narrow(result, result); // lanes 0..7 and 8..15 hold the same 8 values
        packed.GetLower().Store((ushort*)output + i);
    }
}
