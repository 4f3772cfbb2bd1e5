using System.Runtime.CompilerServices;

namespace BnbDist.Backends;

/// <summary>The fixed 4-bit code books and decision thresholds of bitsandbytes' NF4 and FP4 kernels.</summary>
/// <remarks>Values are bitsandbytes 0.50's, verified bit for bit against its golden outputs.</remarks>
public static class FourBitTables
{
    /// <summary>NF4 values by code (the saved <c>quant_map</c> and the dequantization table).</summary>
    public static ReadOnlySpan<float> NF4 =>
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>FP4 values by code as bitsandbytes saves them in <c>quant_map</c> (code 8 is +0.0).</summary>
    public static ReadOnlySpan<float> FP4 =>
    [
        0.0f, 0.0625f / 12f, 8f / 12f, 1.0f, 4f / 12f, 6f / 12f, 2f / 12f, 3f / 12f,
        0.0f, -0.0625f / 12f, -8f / 12f, -1.0f, -4f / 12f, -6f / 12f, -2f / 12f, -3f / 12f,
    ];

    /// <summary>FP4 dequantization table: as <see cref="FP4"/> but code 8 gives -0.0, as bitsandbytes' CUDA kernel does.</summary>
    public static ReadOnlySpan<float> FP4Dequant =>
    [
        0.0f, 0.0625f / 12f, 8f / 12f, 1.0f, 4f / 12f, 6f / 12f, 2f / 12f, 3f / 12f,
        -0.0f, -0.0625f / 12f, -8f / 12f, -1.0f, -4f / 12f, -6f / 12f, -2f / 12f, -3f / 12f,
    ];

    /// <summary>The 15 NF4 decision thresholds: a normalized value's code is the number it strictly exceeds.</summary>
    public static ReadOnlySpan<float> NF4Thresholds =>
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    /// <summary>Dequantization table for a 4-bit type.</summary>
    public static ReadOnlySpan<float> DequantTable(QuantType type) => type == QuantType.NF4 ? NF4 : FP4Dequant;

    /// <summary>Saved code book (<c>quant_map</c>) for a 4-bit type.</summary>
    public static ReadOnlySpan<float> CodeBook(QuantType type) => type == QuantType.NF4 ? NF4 : FP4;

    /// <summary>The 4-bit code of a normalized value, exactly as bitsandbytes' kernels choose it.</summary>
    public static byte Encode(float xn, QuantType type) => type == QuantType.NF4 ? EncodeNF4(xn) : EncodeFP4(xn);

    /// <summary>NF4 code: the number of thresholds <paramref name="xn"/> strictly exceeds (NaN gives 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte EncodeNF4(float xn)
    {
        var t = NF4Thresholds;
        var code = 0;
        for (var i = 0; i < 15; i++)
        {
            code += xn > t[i] ? 1 : 0;
        }

        return (byte)code;
    }

    /// <summary>FP4 code: sign bit 8 for negative values, magnitude by bitsandbytes' threshold tree (ties go down).</summary>
    /// <remarks>
    /// The tree's thresholds are ascending in magnitude, so the tree equals "count the thresholds |x| exceeds" followed by
    /// a rank → code map; counting needs no branches.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte EncodeFP4(float xn)
    {
        var a = MathF.Abs(xn);
        var rank = (a > 0.00260417f ? 1 : 0) + (a > 0.0859375f ? 1 : 0) + (a > 0.20833333f ? 1 : 0) + (a > 0.29166667f ? 1 : 0)
                 + (a > 0.4166667f ? 1 : 0) + (a > 0.583333f ? 1 : 0) + (a > 0.8333333f ? 1 : 0);
        return (byte)((xn < 0f ? 8 : 0) | FP4RankToCode[rank]);
    }

    /// <summary>FP4 magnitude code of each rank (number of thresholds exceeded): 0, 0.0052, 0.167, 0.25, 0.333, 0.5, 0.667, 1.</summary>
    private static ReadOnlySpan<byte> FP4RankToCode => [0, 1, 6, 7, 4, 5, 2, 3];
}
