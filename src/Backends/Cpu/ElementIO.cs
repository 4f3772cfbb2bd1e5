using System.Runtime.CompilerServices;

namespace BnbDist.Backends.Cpu;

/// <summary>Exact upcasts to f32 and round-to-nearest-even downcasts for the float dtypes the kernels take.</summary>
internal static unsafe class ElementIO
{
    /// <summary>Loads <paramref name="dst"/>.Length elements starting at <paramref name="start"/> as f32.</summary>
    public static void Load(void* src, int dtype, long start, Span<float> dst)
    {
        switch (dtype)
        {
            case 0:
                new ReadOnlySpan<float>((float*)src + start, dst.Length).CopyTo(dst);
                break;
            case 1:
                {
                    var s = (ushort*)src + start;
                    int i;
                    fixed (float* d = dst)
                    {
                        i = SimdDecode.LoadBFloat16(s, d, dst.Length);
                    }

                    for (; i < dst.Length; i++)
                    {
                        dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16);
                    }

                    break;
                }

            default:
                {
                    var s = (ushort*)src + start;
                    for (var i = 0; i < dst.Length; i++)
                    {
                        dst[i] = (float)BitConverter.UInt16BitsToHalf(s[i]);
                    }

                    break;
                }
        }
    }

    /// <summary>Stores one f32 value as element <paramref name="i"/> of dtype <paramref name="dtype"/>, rounding to nearest even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(void* dst, int dtype, long i, float v)
    {
        switch (dtype)
        {
            case 0:
                ((float*)dst)[i] = float.IsNaN(v) ? CanonicalNaN : v;
                break;
            case 1:
                ((ushort*)dst)[i] = ToBFloat16(v);
                break;
            default:
                ((ushort*)dst)[i] = float.IsNaN(v) ? (ushort)0x7FFF : BitConverter.HalfToUInt16Bits((Half)v);
                break;
        }
    }

    /// <summary>
    /// The NaN CUDA produces (0x7FFFFFFF). x86 produces 0xFFC00000 for 0·∞; outputs use CUDA's pattern (and 0x7FFF for
    /// bf16/f16, as CUDA's conversions do) so that CPU and CUDA results are equal bit for bit, NaNs included.
    /// </summary>
    public static readonly float CanonicalNaN = BitConverter.Int32BitsToSingle(0x7FFFFFFF);

    /// <summary>f32 → bf16 bits, round to nearest even; NaN becomes the canonical quiet NaN 0x7FFF.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToBFloat16(float v)
    {
        if (float.IsNaN(v))
        {
            return 0x7FFF;
        }

        var b = BitConverter.SingleToUInt32Bits(v);
        b += 0x7FFFu + ((b >> 16) & 1u);
        return (ushort)(b >> 16);
    }
}
