using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Backends;

/// <summary>
/// The step written with TorchSharp ops, so it runs on any device (CUDA tensors use it until a fused kernel exists).
/// It mirrors the C# kernels operation by operation: the kernels' single-rounding FMAs are computed in f64 and rounded
/// to f32 (exact products, so the only difference from a true FMA is a rare double rounding), values are stored in
/// the parameter dtype where bitsandbytes stores them, and requantization uses the same f32 midpoints, upper ties and
/// sign fix. Correct, not fast: it allocates temporaries, bounded by working in chunks.
/// </summary>
internal sealed class TorchOpsStepBackend : IOptimizerStepBackend
{
    /// <summary>Elements per chunk (256-aligned), bounding the f64 temporaries.</summary>
    internal const long ChunkElements = 1L << 22;

    public static readonly TorchOpsStepBackend Instance = new();

    /// <inheritdoc/>
    public string Name => "torch-ops";

    /// <inheritdoc/>
    public void Step(UpdateRule rule, IReadOnlyList<ParamUpdate> updates)
    {
        foreach (var u in updates)
        {
            for (long start = 0; start < u.Count; start += ChunkElements)
            {
                using var scope = NewDisposeScope();
                StepChunk(rule, Slice(u, start, Math.Min(ChunkElements, u.Count - start)));
            }
        }
    }

    private static ParamUpdate Slice(ParamUpdate u, long start, long length)
    {
        if (start == 0 && length == u.Count)
        {
            return u;
        }

        var b0 = start / Adam8bitBlockwise.BlockSize;
        var blocks = (length + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
        return u with
        {
            Param = u.Param.narrow(0, start, length),
            Grad = u.Grad.narrow(0, start, length),
            State1 = u.State1.narrow(0, start, length),
            State2 = u.State2?.narrow(0, start, length),
            Absmax1 = u.Absmax1?.narrow(0, b0, blocks),
            Absmax2 = u.Absmax2?.narrow(0, b0, blocks),
        };
    }

    private static void StepChunk(UpdateRule rule, ParamUpdate u)
    {
        var h = u.Hyper;
        var dtype = u.Param.dtype;
        var p = u.Param.to(ScalarType.Float32);
        var g = u.Grad.to(ScalarType.Float32);
        var old1 = u.Is8bit ? Dequantize(u.State1, u.Absmax1!, u.Qmap1!) : u.State1;
        Tensor newP, new1;
        Tensor? new2 = null;
        switch (rule)
        {
            case UpdateRule.Adam:
                (newP, new1, new2) = Adam(p, g, old1, u.Is8bit ? Dequantize(u.State2!, u.Absmax2!, u.Qmap2!) : u.State2!, h, dtype, u.Is8bit);
                break;
            case UpdateRule.Momentum:
                (newP, new1) = Momentum(p, g, old1, h, dtype, u.Is8bit);
                break;
            case UpdateRule.Lion:
                (newP, new1) = Lion(p, g, old1, h, dtype, u.Is8bit);
                break;
            default:
                (newP, new1) = RmsProp(p, g, old1, h, dtype, u.Is8bit);
                break;
        }

        if (u.Is8bit)
        {
            Requantize(new1, u.State1, u.Absmax1!, u.Qmap1!, signed: true);
            if (new2 is not null)
            {
                Requantize(new2, u.State2!, u.Absmax2!, u.Qmap2!, signed: false);
            }
        }
        else
        {
            u.State1.copy_(new1);
            u.State2?.copy_(new2!);
        }

        u.Param.copy_(newP);
    }

    private static (Tensor P, Tensor M, Tensor V) Adam(Tensor p, Tensor g, Tensor oldM, Tensor oldV, StepHyperparameters h, ScalarType dtype, bool is8bit)
    {
        var correction1 = 1f - MathF.Pow(h.Beta1, h.Step);
        var correction2 = MathF.Sqrt(1f - MathF.Pow(h.Beta2, h.Step));
        var stepSize = -h.Lr * correction2 / correction1;
        var decay = MathF.FusedMultiplyAdd(-h.Lr, h.WeightDecay, 1f);
        var m = Fma(oldM, h.Beta1, g * (1f - h.Beta1));
        var v = Fma(oldV, h.Beta2, g * (1f - h.Beta2) * g);
        Tensor? finite = null;
        if (is8bit)
        {
            // The 8-bit kernel zeroes the moments of a non-finite gradient and leaves its parameter alone.
            finite = g.isfinite();
            m = where(finite, m, zeros_like(m));
            v = where(finite, v, zeros_like(v));
        }

        var denom = Fma(Sqrt(v), 1.0, (double)correction2 * h.Eps);
        var newP = RoundTo(Fma(m / denom, stepSize, p), dtype);
        if (h.WeightDecay > 0f)
        {
            newP = RoundTo(newP * decay, dtype);
        }

        return (finite is null ? newP : where(finite, newP, p), m, v);
    }

    private static (Tensor P, Tensor S) Momentum(Tensor p, Tensor g, Tensor old, StepHyperparameters h, ScalarType dtype, bool is8bit)
    {
        if (h.WeightDecay > 0f)
        {
            g = is8bit ? Fma(p, h.WeightDecay, g) : RoundTo(Fma(p, h.WeightDecay, g), dtype);
        }

        var s = h.Step == 1 ? g : Fma(old, h.Beta1, g);
        var newP = is8bit ? Fma(s, -h.Lr, p) : p + (s * -h.Lr);
        return (RoundTo(newP, dtype), s);
    }

    private static (Tensor P, Tensor S) Lion(Tensor p, Tensor g, Tensor old, StepHyperparameters h, ScalarType dtype, bool is8bit)
    {
        var decay = MathF.FusedMultiplyAdd(-h.Lr, h.WeightDecay, 1f);
        var sign = Sgn(Fma(old, h.Beta1, g * (1f - h.Beta1)));
        var s = Fma(old, h.Beta2, g * (1f - h.Beta2));
        if (!is8bit)
        {
            return (RoundTo(Fma(p, decay, sign * -h.Lr), dtype), s);
        }

        var decayed = h.WeightDecay > 0f ? RoundTo(p * decay, dtype) : p;
        return (RoundTo(decayed - RoundTo(sign * h.Lr, dtype), dtype), s);
    }

    private static (Tensor P, Tensor S) RmsProp(Tensor p, Tensor g, Tensor old, StepHyperparameters h, ScalarType dtype, bool is8bit)
    {
        if (is8bit)
        {
            var decayed = h.WeightDecay > 0f ? Fma(p, h.WeightDecay, g) : g;
            var s8 = Fma(old, h.Beta1, (decayed * decayed) * (1f - h.Beta1));
            return (RoundTo(Fma(g / (Sqrt(s8) + h.Eps), -h.Lr, p), dtype), s8);
        }

        if (h.WeightDecay > 0f)
        {
            g = RoundTo(Fma(p, h.WeightDecay, g), dtype);
        }

        var s = Fma(old, h.Beta1, g * (1f - h.Beta1) * g);
        return (RoundTo(p - (g / (Sqrt(s) + h.Eps) * h.Lr), dtype), s);
    }

    /// <summary>qmap[code] · absmax[block] in f32, as the kernels dequantize.</summary>
    private static Tensor Dequantize(Tensor codes, Tensor absmax, Tensor qmap)
    {
        var n = codes.numel();
        var scale = absmax.repeat_interleave(Adam8bitBlockwise.BlockSize).narrow(0, 0, n);
        return qmap.index_select(0, codes.to(ScalarType.Int64)) * scale;
    }

    /// <summary>New per-block absmax (NaN ignored, +inf stored as float.MaxValue), then the nearest codes with the sign fix.</summary>
    private static void Requantize(Tensor x, Tensor codes, Tensor absmax, Tensor qmap, bool signed)
    {
        var n = x.numel();
        var blocks = absmax.numel();
        var a = x.abs();
        a = where(a.isnan(), zeros_like(a), a);
        var padded = nn.functional.pad(a, [0, (blocks * Adam8bitBlockwise.BlockSize) - n]);
        var max = padded.view(blocks, Adam8bitBlockwise.BlockSize).amax([1]).clamp_max(float.MaxValue);
        absmax.copy_(max);

        var normalized = x / max.repeat_interleave(Adam8bitBlockwise.BlockSize).narrow(0, 0, n);
        var mids = (qmap.narrow(0, 0, 255) + qmap.narrow(0, 1, 255)) * 0.5f;
        var c = normalized.bucketize(mids, false, true);
        c = where(normalized.isnan(), zeros_like(c), c);
        if (signed)
        {
            var flip = qmap.index_select(0, c).signbit().ne(x.signbit());
            var step = where(x > 0f, ones_like(c), full_like(c, -1));
            c = where(flip, c + step, c);
            c = where(c.lt(0), c + 256, c); // u8 wrap of the kernel's c -= 1 at code 0 (NaN or zero state)
        }

        codes.copy_(c.to(ScalarType.Byte));
    }

    /// <summary>a·b + c with one rounding to f32 (exact f64 product; the f64 sum rounds once more only in rare ties).</summary>
    private static Tensor Fma(Tensor a, double b, Tensor c) =>
        ((a.to(ScalarType.Float64) * b) + c.to(ScalarType.Float64)).to(ScalarType.Float32);

    private static Tensor Fma(Tensor a, double b, double c) =>
        ((a.to(ScalarType.Float64) * b) + c).to(ScalarType.Float32);

    private static Tensor Fma(Tensor a, float b, Tensor c) => Fma(a, (double)b, c);

    /// <summary>Correctly rounded f32 square root (libtorch's CPU f32 sqrt is not: about 20 % of results differ by an ulp).</summary>
    private static Tensor Sqrt(Tensor x) => x.to(ScalarType.Float64).sqrt().to(ScalarType.Float32);

    /// <summary>x stored in the parameter dtype and widened back (identity for f32).</summary>
    private static Tensor RoundTo(Tensor x, ScalarType dtype) =>
        dtype == ScalarType.Float32 ? x : x.to(dtype).to(ScalarType.Float32);

    /// <summary>CUDA's sgn: (0 &lt; x) − (x &lt; 0); 0 and NaN give 0.</summary>
    private static Tensor Sgn(Tensor x) => x.gt(0f).to(ScalarType.Float32) - x.lt(0f).to(ScalarType.Float32);
}
