using System.Buffers;
using System.Buffers.Binary;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Converts a stream of float elements between f32, bf16, f16 and f64 (little-endian) without libtorch, rounding as
/// torch's casts do (to nearest even; NaN to bf16 is 0x7FC0), and hands the result to a sink. Chunks may split elements.
/// </summary>
internal sealed class FloatConverter(ScalarType from, ScalarType to, ByteSink sink)
{
    private readonly int inSize = Size(from);
    private readonly int outSize = Size(to);
    private readonly byte[] carry = new byte[8];
    private int carried;

    /// <summary>Whether both dtypes are ones this converter handles.</summary>
    public static bool Supports(ScalarType dtype) => dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64;

    public void Write(ReadOnlySpan<byte> chunk)
    {
        if (carried > 0)
        {
            var take = Math.Min(inSize - carried, chunk.Length);
            chunk[..take].CopyTo(carry.AsSpan(carried));
            carried += take;
            chunk = chunk[take..];
            if (carried < inSize)
            {
                return;
            }

            Convert(carry.AsSpan(0, inSize));
            carried = 0;
        }

        var whole = chunk.Length / inSize * inSize;
        Convert(chunk[..whole]);
        chunk[whole..].CopyTo(carry);
        carried = chunk.Length - whole;
    }

    /// <summary>Checks the stream ended on an element boundary.</summary>
    public void Finish()
    {
        if (carried != 0)
        {
            throw new InvalidOperationException($"the stream ended inside a {from} element.");
        }
    }

    private void Convert(ReadOnlySpan<byte> input)
    {
        const int Block = 1 << 16;
        var buffer = ArrayPool<byte>.Shared.Rent(Block * outSize);
        try
        {
            for (var start = 0; start < input.Length; start += Block * inSize)
            {
                var part = input[start..Math.Min(input.Length, start + (Block * inSize))];
                var n = part.Length / inSize;
                for (var i = 0; i < n; i++)
                {
                    Store(buffer.AsSpan(i * outSize, outSize), Load(part.Slice(i * inSize, inSize)));
                }

                sink(buffer.AsSpan(0, n * outSize));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private float Load(ReadOnlySpan<byte> b) => from switch
    {
        ScalarType.Float32 => BinaryPrimitives.ReadSingleLittleEndian(b),
        ScalarType.BFloat16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(b) << 16),
        ScalarType.Float16 => (float)BinaryPrimitives.ReadHalfLittleEndian(b),
        _ => (float)BinaryPrimitives.ReadDoubleLittleEndian(b),
    };

    private void Store(Span<byte> b, float v)
    {
        switch (to)
        {
            case ScalarType.Float32:
                BinaryPrimitives.WriteSingleLittleEndian(b, v);
                break;
            case ScalarType.BFloat16:
                var u = (uint)BitConverter.SingleToInt32Bits(v);
                BinaryPrimitives.WriteUInt16LittleEndian(b, float.IsNaN(v) ? (ushort)0x7FC0 : (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16));
                break;
            case ScalarType.Float16:
                BinaryPrimitives.WriteHalfLittleEndian(b, (Half)v);
                break;
            default:
                BinaryPrimitives.WriteDoubleLittleEndian(b, v);
                break;
        }
    }

    private static int Size(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        ScalarType.Float64 => 8,
        _ => throw new ArgumentException($"{dtype} is not a float dtype this converter handles.", nameof(dtype)),
    };
}
