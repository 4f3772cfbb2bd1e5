using System.Buffers.Binary;
using System.IO.Compression;

namespace BnbDist.Examples.Llama.Corpora.RData;

/// <summary>
/// An R lazy-load database: the index <c>NAME.rdx</c> (a gzip'd serialized list of <c>variables</c>,
/// <c>references</c> and <c>compressed</c>) and the blob file <c>NAME.rdb</c>, where each object is a 4-byte big-endian
/// uncompressed length followed by a zlib stream holding its serialization (R's <c>lazyLoadDBfetch</c>).
/// </summary>
public sealed class LazyLoadDatabase
{
    private readonly Dictionary<string, (long Offset, int Length)> variables;
    private readonly int compression;

    private LazyLoadDatabase(string indexPath, string blobPath, Dictionary<string, (long, int)> variables, int compression)
    {
        IndexPath = indexPath;
        BlobPath = blobPath;
        this.variables = variables;
        this.compression = compression;
    }

    /// <summary>The <c>.rdx</c> file.</summary>
    public string IndexPath { get; }

    /// <summary>The <c>.rdb</c> file.</summary>
    public string BlobPath { get; }

    /// <summary>Names of the objects in the database, ordinally sorted.</summary>
    public IReadOnlyList<string> Names => [.. variables.Keys.Order(StringComparer.Ordinal)];

    /// <summary>Opens a database from its <c>.rdx</c> path (the <c>.rdb</c> must sit beside it).</summary>
    /// <exception cref="FileNotFoundException">Either file is missing.</exception>
    /// <exception cref="RDataFormatException">The index is not a lazy-load index.</exception>
    public static LazyLoadDatabase Open(string indexPath)
    {
        ArgumentNullException.ThrowIfNull(indexPath);
        var blobPath = Path.ChangeExtension(indexPath, ".rdb");
        foreach (var p in new[] { indexPath, blobPath })
        {
            if (!File.Exists(p))
            {
                throw new FileNotFoundException($"R lazy-load database file not found: {p}", p);
            }
        }

        RObject index;
        try
        {
            using var file = File.OpenRead(indexPath);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            index = RSerializationReader.Read(gzip, indexPath);
        }
        catch (InvalidDataException ex)
        {
            throw new RDataFormatException(indexPath, $"not a gzip'd R index: {ex.Message}", ex);
        }

        if (index is not RList list || list["variables"] is not RList vars || vars.Names is not { } names)
        {
            throw new RDataFormatException(indexPath, "no named 'variables' list: not a lazy-load index.");
        }

        var compression = list["compressed"] switch
        {
            RIntVector { Values: [var c] } => c,
            RDoubleVector { Values: [var c] } => (int)c,
            null => 1,
            _ => throw new RDataFormatException(indexPath, "'compressed' is not a single number."),
        };

        var entries = new Dictionary<string, (long, int)>(StringComparer.Ordinal);
        for (var i = 0; i < vars.Values.Count; i++)
        {
            var name = names[i] ?? throw new RDataFormatException(indexPath, $"variable {i} has no name.");
            entries[name] = vars.Values[i] switch
            {
                RIntVector { Values: [var offset, var length] } => (offset, length),
                RDoubleVector { Values: [var offset, var length] } => ((long)offset, (int)length),
                _ => throw new RDataFormatException(indexPath, $"variable '{name}' has no [offset, length] pair."),
            };
        }

        return new LazyLoadDatabase(indexPath, blobPath, entries, compression);
    }

    /// <summary>Reads and deserializes the object <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such object (the message lists those present).</exception>
    public RObject Read(string name)
    {
        if (!variables.TryGetValue(name, out var entry))
        {
            throw new KeyNotFoundException($"{IndexPath}: no object '{name}' (present: {string.Join(", ", Names)}).");
        }

        var source = $"{BlobPath} [{name}]";
        if (compression != 1)
        {
            throw new RDataFormatException(source, $"compression type {compression} is not supported (only 1, zlib; R writes 2 for bzip2, 3 for xz).");
        }

        using var file = File.OpenRead(BlobPath);
        if (entry.Offset < 0 || entry.Length < 4 || entry.Offset + entry.Length > file.Length)
        {
            throw new RDataFormatException(source, $"entry [{entry.Offset}, +{entry.Length}) lies outside the {file.Length}-byte file.");
        }

        var blob = new byte[entry.Length];
        file.Seek(entry.Offset, SeekOrigin.Begin);
        file.ReadExactly(blob);
        var expected = BinaryPrimitives.ReadInt32BigEndian(blob);
        try
        {
            using var zlib = new ZLibStream(new MemoryStream(blob, 4, blob.Length - 4), CompressionMode.Decompress);
            using var plain = new MemoryStream(Math.Max(expected, 0));
            zlib.CopyTo(plain);
            if (plain.Length != expected)
            {
                throw new RDataFormatException(source, $"decompressed to {plain.Length} bytes, the entry says {expected}.");
            }

            plain.Position = 0;
            return RSerializationReader.Read(plain, source);
        }
        catch (InvalidDataException ex)
        {
            throw new RDataFormatException(source, $"zlib data is corrupt: {ex.Message}", ex);
        }
    }

    /// <summary>Reads a character-vector object (NA elements become empty strings).</summary>
    /// <exception cref="RDataFormatException">The object is not a character vector.</exception>
    public IReadOnlyList<string> ReadStrings(string name) => Read(name) is RStringVector v
        ? [.. v.Values.Select(s => s ?? string.Empty)]
        : throw new RDataFormatException($"{BlobPath} [{name}]", "not a character vector.");
}
