using TorchSharp;

namespace BnbDist.Backends;

/// <summary>The per-block scales of 4-bit data: plain f32 absmax, or a double-quantized (nested) absmax.</summary>
/// <remarks>
/// Nested scales follow bitsandbytes' <c>compress_statistics</c>: absmax[i] = code[q[i]]·nestedAbsmax[i / nestedBlocksize] + offset.
/// </remarks>
public sealed class FourBitScales
{
    private FourBitScales(torch.Tensor? absmax, torch.Tensor? qabsmax, torch.Tensor? nestedAbsmax, torch.Tensor? nestedCode,
        torch.Tensor? offset, int nestedBlocksize)
    {
        Absmax = absmax;
        QAbsmax = qabsmax;
        NestedAbsmax = nestedAbsmax;
        NestedCode = nestedCode;
        Offset = offset;
        NestedBlocksize = nestedBlocksize;
    }

    /// <summary>f32 absmax per block (plain scales), or null when nested.</summary>
    public torch.Tensor? Absmax { get; }

    /// <summary>u8 codes of absmax − offset per block (nested), or null.</summary>
    public torch.Tensor? QAbsmax { get; }

    /// <summary>f32 absmax of each nested block (nested), or null.</summary>
    public torch.Tensor? NestedAbsmax { get; }

    /// <summary>The 256-entry code book of the nested quantization, or null.</summary>
    public torch.Tensor? NestedCode { get; }

    /// <summary>f32[1] mean that was subtracted before nested quantization, or null.</summary>
    public torch.Tensor? Offset { get; }

    /// <summary>Block size of the nested quantization (bitsandbytes uses 256), or 0.</summary>
    public int NestedBlocksize { get; }

    /// <summary>Whether the scales are double-quantized.</summary>
    public bool IsNested => QAbsmax is not null;

    /// <summary>Plain f32 absmax scales.</summary>
    public static FourBitScales Plain(torch.Tensor absmax) =>
        new(absmax ?? throw new ArgumentNullException(nameof(absmax)), null, null, null, null, 0);

    /// <summary>Double-quantized scales.</summary>
    public static FourBitScales Nested(torch.Tensor qabsmax, torch.Tensor nestedAbsmax, torch.Tensor nestedCode,
        torch.Tensor offset, int nestedBlocksize)
    {
        ArgumentNullException.ThrowIfNull(qabsmax);
        ArgumentNullException.ThrowIfNull(nestedAbsmax);
        ArgumentNullException.ThrowIfNull(nestedCode);
        ArgumentNullException.ThrowIfNull(offset);
        return new(null, qabsmax, nestedAbsmax, nestedCode, offset, nestedBlocksize);
    }
}
