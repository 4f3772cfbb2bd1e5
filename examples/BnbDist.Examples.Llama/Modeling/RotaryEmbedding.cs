using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>
/// Rotary position embeddings as Hugging Face's Llama applies them: frequencies <c>θ^(-2i/d)</c>, the two halves of
/// each head rotated (<c>rotate_half</c>), cos/sin computed in fp32 and cast to the activations' dtype. Positions are
/// 0..T-1 (no KV cache), so the tables depend only on T: <see cref="SharedTables"/> computes them once per shape and
/// device (a training step would otherwise spend a dozen small kernels per layer on them).
/// </summary>
public static class RotaryEmbedding
{
    private static readonly ConcurrentDictionary<(long SeqLen, int HeadDim, double Theta, DeviceType Type, int Index, ScalarType DType), (Tensor Cos, Tensor Sin)> Cache = new();

    /// <summary>Like <see cref="Tables"/>, but shared and kept for the process: callers must not dispose or modify them.</summary>
    public static (Tensor Cos, Tensor Sin) SharedTables(long seqLen, int headDim, double theta, Device device, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(device);
        return Cache.GetOrAdd((seqLen, headDim, theta, device.type, device.index, dtype), _ =>
        {
            using var grad = no_grad();
            var (cos, sin) = Tables(seqLen, headDim, theta, device, dtype);
            return (cos.DetachFromDisposeScope(), sin.DetachFromDisposeScope());
        });
    }

    /// <summary>cos and sin tables of shape [T, headDim].</summary>
    public static (Tensor Cos, Tensor Sin) Tables(long seqLen, int headDim, double theta, Device device, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var exponent = arange(0, headDim, 2, dtype: ScalarType.Int64, device: device).to_type(ScalarType.Float32) / headDim;
        var invFreq = tensor((float)theta, device: device).pow(exponent).reciprocal();
        var positions = arange(seqLen, dtype: ScalarType.Float32, device: device);
        var freqs = outer(positions, invFreq);
        var emb = cat([freqs, freqs], -1);
        return (emb.cos().to_type(dtype).MoveToOuterDisposeScope(), emb.sin().to_type(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>Rotates <paramref name="x"/> [B, heads, T, headDim] by the tables.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var rotated = cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }
}
