namespace BnbDist;

/// <summary>The 4-bit data types of bitsandbytes' <c>quantize_4bit</c> (its <c>quant_type</c> strings "fp4" and "nf4").</summary>
public enum QuantType
{
    /// <summary>4-bit float (e2m1, bitsandbytes' "fp4").</summary>
    FP4 = 0,

    /// <summary>4-bit NormalFloat (bitsandbytes' "nf4").</summary>
    NF4 = 1,
}
