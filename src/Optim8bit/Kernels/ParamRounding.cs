using BnbDist.Backends.Cpu;

namespace BnbDist.Optim8bit.Kernels;

/// <summary>
/// Where bitsandbytes' kernels store an intermediate in the parameter's dtype T (<c>p_vals[j] = (T)(...)</c>), the C#
/// kernels, which compute in f32, round through this: identity for f32 parameters, round-to-nearest-even to bf16 or f16
/// otherwise (what CUDA's conversions do).
/// </summary>
internal interface IParamRounding
{
    /// <summary>x rounded to the parameter dtype and widened back to f32.</summary>
    static abstract float Round(float x);
}

/// <summary>f32 parameters: nothing to round.</summary>
internal readonly struct Float32Rounding : IParamRounding
{
    /// <inheritdoc/>
    public static float Round(float x) => x;
}

/// <summary>bf16 parameters.</summary>
internal readonly struct BFloat16Rounding : IParamRounding
{
    /// <inheritdoc/>
    public static float Round(float x) => BitConverter.Int32BitsToSingle(ElementIO.ToBFloat16(x) << 16);
}

/// <summary>f16 parameters.</summary>
internal readonly struct Float16Rounding : IParamRounding
{
    /// <inheritdoc/>
    public static float Round(float x) => (float)(Half)x;
}
