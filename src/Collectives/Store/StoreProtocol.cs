using System.Buffers.Binary;
using System.Text;

namespace BnbDist.Collectives.Store;

/// <summary>Operation codes of the store's wire protocol.</summary>
internal enum StoreOp : byte
{
    Hello = 1,
    Set = 2,
    Get = 3,
    Add = 4,
    CompareSet = 5,
    Wait = 6,
    Delete = 7,
    NumKeys = 8,
    Check = 9,
}

/// <summary>Status byte of every reply.</summary>
internal enum StoreStatus : byte
{
    Ok = 0,
    Timeout = 1,
    Error = 2,
}

/// <summary>
/// Frames: a 4-byte little-endian length, then that many bytes (an op code or status byte and its fields). Strings and
/// byte arrays carry a 4-byte length. Every length read from the wire is checked against a bound before anything is
/// allocated, so a peer cannot make the other side allocate more than <see cref="StoreOptions.MaxMessageBytes"/>.
/// </summary>
internal static class StoreProtocol
{
    public const uint Magic = 0x424E4253; // "BNBS"
    public const ushort Version = 1;

    /// <summary>Bound on the first (unauthenticated) frame.</summary>
    public const int MaxHelloBytes = 4096;

    public static async Task<byte[]?> ReadFrameAsync(Stream stream, int maxBytes, CancellationToken ct)
    {
        var header = new byte[4];
        if (!await ReadExactAsync(stream, header, ct).ConfigureAwait(false))
        {
            return null; // clean end of stream
        }

        var length = BinaryPrimitives.ReadUInt32LittleEndian(header);
        if (length == 0 || length > (uint)maxBytes)
        {
            throw new InvalidDataException($"frame of {length} bytes is outside 1..{maxBytes}.");
        }

        var body = new byte[length];
        if (!await ReadExactAsync(stream, body, ct).ConfigureAwait(false))
        {
            throw new EndOfStreamException("connection closed in the middle of a frame.");
        }

        return body;
    }

    public static async Task WriteFrameAsync(Stream stream, byte[] body, CancellationToken ct)
    {
        var frame = new byte[4 + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)body.Length);
        body.CopyTo(frame, 4);
        await stream.WriteAsync(frame, ct).ConfigureAwait(false);
        await stream.FlushAsync(ct).ConfigureAwait(false);
    }

    private static async Task<bool> ReadExactAsync(Stream stream, byte[] buffer, CancellationToken ct)
    {
        var read = 0;
        while (read < buffer.Length)
        {
            var n = await stream.ReadAsync(buffer.AsMemory(read), ct).ConfigureAwait(false);
            if (n == 0)
            {
                if (read == 0)
                {
                    return false;
                }

                throw new EndOfStreamException("connection closed in the middle of a frame.");
            }

            read += n;
        }

        return true;
    }
}

/// <summary>Builds a frame body field by field.</summary>
internal sealed class FrameWriter
{
    private readonly MemoryStream ms = new();

    public FrameWriter Byte(byte b)
    {
        ms.WriteByte(b);
        return this;
    }

    public FrameWriter Int64(long v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        ms.Write(b);
        return this;
    }

    public FrameWriter UInt32(uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        ms.Write(b);
        return this;
    }

    public FrameWriter Bytes(ReadOnlySpan<byte> v)
    {
        UInt32((uint)v.Length);
        ms.Write(v);
        return this;
    }

    public FrameWriter String(string s) => Bytes(Encoding.UTF8.GetBytes(s));

    public byte[] ToArray() => ms.ToArray();
}

/// <summary>Reads a frame body field by field; any overrun is an <see cref="InvalidDataException"/>.</summary>
internal sealed class FrameReader(byte[] body)
{
    private int pos;

    public bool AtEnd => pos == body.Length;

    public byte Byte()
    {
        Need(1);
        return body[pos++];
    }

    public long Int64()
    {
        Need(8);
        var v = BinaryPrimitives.ReadInt64LittleEndian(body.AsSpan(pos));
        pos += 8;
        return v;
    }

    public uint UInt32()
    {
        Need(4);
        var v = BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(pos));
        pos += 4;
        return v;
    }

    public byte[] Bytes()
    {
        var len = UInt32();
        if (len > (uint)(body.Length - pos))
        {
            throw new InvalidDataException($"field of {len} bytes runs past the end of the frame.");
        }

        var v = body.AsSpan(pos, (int)len).ToArray();
        pos += (int)len;
        return v;
    }

    public string String() => Encoding.UTF8.GetString(Bytes());

    private void Need(int n)
    {
        if (body.Length - pos < n)
        {
            throw new InvalidDataException("frame ends too early.");
        }
    }
}
