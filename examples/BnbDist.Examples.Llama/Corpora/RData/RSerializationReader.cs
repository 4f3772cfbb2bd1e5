using System.Buffers.Binary;
using System.Text;

namespace BnbDist.Examples.Llama.Corpora.RData;

/// <summary>
/// Reads one object in R's XDR serialization format (<c>"X\n"</c>, versions 2 and 3), as written by
/// <c>serialize()</c>/<c>saveRDS()</c> and inside lazy-load databases. Follows <c>ReadItem</c> in R's
/// <c>src/main/serialize.c</c> for the types data packages use; anything else is an <see cref="RDataFormatException"/>
/// naming the type code.
/// </summary>
public sealed class RSerializationReader
{
    // SEXP type codes (Rinternals.h) and the pseudo-types of serialize.c.
    private const int SymSxp = 1, ListSxp = 2, CharSxp = 9, LglSxp = 10, IntSxp = 13, RealSxp = 14, StrSxp = 16, VecSxp = 19;
    private const int RefSxp = 255, NilValueSxp = 254;

    private const int HasAttributesBit = 1 << 9, HasTagBit = 1 << 10;

    // CHARSXP encoding flags in the "levels" bits (flags >> 12).
    private const int Latin1Mask = 1 << 2;

    private readonly Stream stream;
    private readonly string source;
    private readonly List<RObject> references = [];
    private Encoding nativeEncoding = Encoding.UTF8;

    private RSerializationReader(Stream stream, string source)
    {
        this.stream = stream;
        this.source = source;
    }

    /// <summary>Reads the header and the single object of a serialization stream.</summary>
    /// <param name="stream">The (already decompressed) stream, positioned at <c>"X\n"</c>.</param>
    /// <param name="source">Names the data in error messages (a file, or file and object).</param>
    public static RObject Read(Stream stream, string source)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(source);
        var reader = new RSerializationReader(stream, source);
        reader.ReadHeader();
        return reader.ReadItem();
    }

    private void ReadHeader()
    {
        Span<byte> magic = stackalloc byte[2];
        if (stream.ReadAtLeast(magic, 2, throwOnEndOfStream: false) != 2 || magic[1] != (byte)'\n')
        {
            throw Fail("not an R serialization stream (no format line).");
        }

        if (magic[0] != (byte)'X')
        {
            throw Fail($"serialization format '{(char)magic[0]}' is not supported (only XDR, 'X').");
        }

        var version = ReadInt();
        _ = ReadInt(); // writer's R version
        _ = ReadInt(); // oldest R version that can read it
        if (version == 3)
        {
            var name = Encoding.ASCII.GetString(ReadBytes(ReadLength()));
            nativeEncoding = name.Equals("UTF-8", StringComparison.OrdinalIgnoreCase) ? Encoding.UTF8 : Encoding.Latin1;
        }
        else if (version != 2)
        {
            throw Fail($"serialization version {version} is not supported (2 or 3).");
        }
    }

    private RObject ReadItem()
    {
        var flags = ReadInt();
        var type = flags & 0xFF;
        var hasAttributes = (flags & HasAttributesBit) != 0;
        switch (type)
        {
            case NilValueSxp:
                return RNull.Instance;
            case RefSxp:
                var index = flags >> 8;
                if (index == 0)
                {
                    index = ReadInt();
                }

                return index >= 1 && index <= references.Count ? references[index - 1] : throw Fail($"reference {index} is not in the table ({references.Count} entries).");
            case SymSxp:
                var symbol = new RSymbol(ReadItem() is RStringVector { Values: [var name] } ? name ?? "NA" : throw Fail("a symbol's name is not a string."));
                references.Add(symbol);
                return symbol;
            case ListSxp:
                return ReadPairList(flags);
            case CharSxp:
                return new RStringVector([ReadCharSxpBody(flags)]);
            case LglSxp or IntSxp:
                return WithAttributes(new RIntVector(ReadInts(ReadLength()), type == LglSxp), hasAttributes);
            case RealSxp:
                return WithAttributes(new RDoubleVector(ReadDoubles(ReadLength())), hasAttributes);
            case StrSxp:
                return WithAttributes(new RStringVector(ReadStrings(ReadLength())), hasAttributes);
            case VecSxp:
                var items = new RObject[ReadLength()];
                for (var i = 0; i < items.Length; i++)
                {
                    items[i] = ReadItem();
                }

                return WithAttributes(new RList(items), hasAttributes);
            default:
                throw Fail($"R object type {type} (flags 0x{flags:X}) is not supported by this reader.");
        }
    }

    private RPairList ReadPairList(int flags)
    {
        // A pairlist is a chain of cells: [attributes] [tag] car cdr, where cdr is the next cell or NULL.
        var cells = new List<(RObject? Tag, RObject Value)>();
        RPairList? attributes = null;
        while (true)
        {
            var cellAttributes = (flags & HasAttributesBit) != 0 ? ReadItem() as RPairList : null;
            attributes ??= cellAttributes;
            var tag = (flags & HasTagBit) != 0 ? ReadItem() : null;
            cells.Add((tag, ReadItem()));
            flags = ReadInt();
            if ((flags & 0xFF) == NilValueSxp)
            {
                return new RPairList(cells) { Attributes = attributes };
            }

            if ((flags & 0xFF) != ListSxp)
            {
                throw Fail($"a pairlist ends in type {flags & 0xFF}, not NULL.");
            }
        }
    }

    private RObject WithAttributes(RObject value, bool hasAttributes)
    {
        if (hasAttributes)
        {
            value.Attributes = ReadItem() as RPairList ?? throw Fail("attributes are not a pairlist.");
        }

        return value;
    }

    private string?[] ReadStrings(int n)
    {
        var values = new string?[n];
        for (var i = 0; i < n; i++)
        {
            var flags = ReadInt();
            if ((flags & 0xFF) != CharSxp)
            {
                throw Fail($"element {i} of a character vector has type {flags & 0xFF}, not CHARSXP.");
            }

            values[i] = ReadCharSxpBody(flags);
        }

        return values;
    }

    private string? ReadCharSxpBody(int flags)
    {
        var length = ReadInt();
        if (length == -1)
        {
            return null; // NA_character_
        }

        if (length < 0)
        {
            throw Fail($"string length {length} is invalid.");
        }

        var levels = flags >> 12;
        var encoding = (levels & Latin1Mask) != 0 ? Encoding.Latin1 : levels == 0 ? nativeEncoding : Encoding.UTF8;
        return encoding.GetString(ReadBytes(length));
    }

    private int[] ReadInts(int n)
    {
        var bytes = ReadBytes(checked(n * 4));
        var values = new int[n];
        for (var i = 0; i < n; i++)
        {
            values[i] = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(i * 4));
        }

        return values;
    }

    private double[] ReadDoubles(int n)
    {
        var bytes = ReadBytes(checked(n * 8));
        var values = new double[n];
        for (var i = 0; i < n; i++)
        {
            values[i] = BinaryPrimitives.ReadDoubleBigEndian(bytes.AsSpan(i * 8));
        }

        return values;
    }

    private int ReadLength()
    {
        var n = ReadInt();
        if (n == -1)
        {
            throw Fail("long vectors (2^31 elements or more) are not supported.");
        }

        return n >= 0 ? n : throw Fail($"length {n} is invalid.");
    }

    private int ReadInt()
    {
        Span<byte> b = stackalloc byte[4];
        if (stream.ReadAtLeast(b, 4, throwOnEndOfStream: false) != 4)
        {
            throw Fail("unexpected end of data.");
        }

        return BinaryPrimitives.ReadInt32BigEndian(b);
    }

    private byte[] ReadBytes(int n)
    {
        var bytes = new byte[n];
        if (stream.ReadAtLeast(bytes, n, throwOnEndOfStream: false) != n)
        {
            throw Fail("unexpected end of data.");
        }

        return bytes;
    }

    private RDataFormatException Fail(string problem) => new(source, problem);
}
