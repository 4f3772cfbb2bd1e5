using BnbDist.Backends;
using static TorchSharp.torch;

namespace BnbDist;

/// <summary>The 4-bit GEMV of the functional API.</summary>
public static partial class Functional
{
    /// <summary>
    /// 4-bit GEMV for a single input row (bitsandbytes <c>gemv_4bit</c>, the decode path of <c>Linear4bit</c>): A [..., K] with one row
    /// times the dequantized [N, K] weight, transposed: A·dequant(W)ᵀ → [..., N] in A's dtype. The weight is read once, in its packed
    /// form; no dequantized copy is made. CUDA accumulates in f32 (within (K/32 + 40)·2^-24·Σ|x·w| of the exact dot product before the
    /// final rounding, see <c>bnbd_gemv_4bit</c>); the CPU computes the reference in f64 from the f32-dequantized weight.
    /// </summary>
    /// <param name="A">float32, bfloat16 or float16; the product of the leading dimensions must be 1 (e.g. [1, K] or [1, 1, K]).</param>
    /// <param name="packed">The packed weight of a 2-D [N, K] 4-bit state, on A's device.</param>
    /// <param name="state">Its 4-bit QuantState (plain or double-quantized absmax).</param>
    /// <param name="out">Optional preallocated output with N elements of A's dtype.</param>
    /// <exception cref="ArgumentException">A has more than one row or the wrong K, the state is not a 2-D 4-bit state, or a tensor is
    /// on another device or of the wrong dtype.</exception>
    public static Tensor Gemv4Bit(Tensor A, Tensor packed, QuantState state, Tensor? @out = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        ArgumentNullException.ThrowIfNull(packed);
        ArgumentNullException.ThrowIfNull(state);
        if (state.QuantType is not QuantType quantType)
        {
            throw new ArgumentException("state is an 8-bit state (no QuantType); Gemv4Bit needs a 4-bit one.", nameof(state));
        }

        if (state.Shape.Count != 2)
        {
            throw new ArgumentException($"state must describe a 2-D [N, K] weight; got [{string.Join(", ", state.Shape)}].", nameof(state));
        }

        var (n, k) = (state.Shape[0], state.Shape[1]);
        if (A.dim() < 1 || A.shape[^1] != k || A.numel() != k)
        {
            throw new ArgumentException(
                $"A must be one row of K = {k} elements ([..., {k}] with leading dimensions of product 1); got [{string.Join(", ", A.shape)}]. " +
                "Use Dequantize4Bit and a matmul for more rows.", nameof(A));
        }

        var shape = A.shape.ToArray();
        shape[^1] = n;
        @out ??= empty(shape, A.dtype, A.device);
        if (@out.numel() != n)
        {
            throw new ArgumentException($"out must have {n} elements; got {@out.numel()}.", nameof(@out));
        }

        using var x = A.contiguous();
        QuantBackends.For(A.device).Gemv4Bit(x, packed, quantType, ScalesOf(state), @out, state.BlockSize);
        return @out;
    }
}
