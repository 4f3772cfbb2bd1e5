using BnbDist.Backends.Interop;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>Receives a stream of bytes in order, one chunk at a time (a span is valid only during the call).</summary>
internal delegate void ByteSink(ReadOnlySpan<byte> chunk);

/// <summary>A tensor's bytes as spans of host memory, in chunks (tensors may exceed a span's 2 GiB), without extra copies on the CPU.</summary>
internal static class TensorBytes
{
    /// <summary>Largest chunk handed to a sink or read from a file at once.</summary>
    public const int ChunkBytes = 8 << 20;

    public static long ByteLength(Tensor t) => t.numel() * TensorMemory.ElementSize(t.dtype);

    /// <summary>Hands the bytes of <paramref name="t"/> (any device) to <paramref name="sink"/> in order.</summary>
    public static unsafe void WriteTo(Tensor t, ByteSink sink)
    {
        var total = ByteLength(t);
        if (total == 0)
        {
            return;
        }

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var host = t.detach().cpu().contiguous(); // on the CPU, a view of t: nothing is copied
        var p = (byte*)TensorMemory.DataPointer(host);
        for (long off = 0; off < total; off += ChunkBytes)
        {
            sink(new ReadOnlySpan<byte>(p + off, (int)Math.Min(ChunkBytes, total - off)));
        }
    }

    /// <summary>A sink that fills host tensor <paramref name="t"/> (contiguous, on the CPU) from its first byte on; <see cref="Filled"/> says how far.</summary>
    public sealed unsafe class Filler(Tensor t)
    {
        private readonly byte* p = ByteLength(t) == 0 ? null : (byte*)TensorMemory.DataPointer(t);
        private readonly long length = ByteLength(t);

        public long Filled { get; private set; }

        public void Write(ReadOnlySpan<byte> chunk)
        {
            if (Filled + chunk.Length > length)
            {
                throw new InvalidOperationException($"{Filled + chunk.Length} bytes for a tensor of {length}.");
            }

            chunk.CopyTo(new Span<byte>(p + Filled, chunk.Length));
            Filled += chunk.Length;
        }
    }
}
