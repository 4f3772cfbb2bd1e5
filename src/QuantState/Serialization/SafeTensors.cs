using System.Text;
using System.Text.Json;
using BnbDist.Backends.Interop;
using static TorchSharp.torch;

namespace BnbDist.Serialization;

/// <summary>Metadata of one tensor in a safetensors file.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Begin">Start of its bytes, relative to the data buffer.</param>
/// <param name="End">End (exclusive) of its bytes, relative to the data buffer.</param>
public sealed record SafeTensorInfo(string Name, ScalarType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements.</summary>
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A strict reader of the safetensors format (8-byte little-endian header length, JSON header, data buffer).
/// Every structural problem is a <see cref="SafeTensorsFormatException"/> naming the file and the problem;
/// tensor bytes are read only on request.
/// </summary>
public sealed class SafeTensorsFile
{
    /// <summary>Largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private static readonly Dictionary<string, ScalarType> DTypes = new()
    {
        ["F32"] = ScalarType.Float32,
        ["F16"] = ScalarType.Float16,
        ["BF16"] = ScalarType.BFloat16,
        ["F64"] = ScalarType.Float64,
        ["U8"] = ScalarType.Byte,
        ["I8"] = ScalarType.Int8,
        ["I16"] = ScalarType.Int16,
        ["I32"] = ScalarType.Int32,
        ["I64"] = ScalarType.Int64,
        ["BOOL"] = ScalarType.Bool,
    };

    private readonly Dictionary<string, SafeTensorInfo> tensors;

    private SafeTensorsFile(string path, long dataStart, Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        DataStart = dataStart;
        this.tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>Offset of the data buffer in the file.</summary>
    public long DataStart { get; }

    /// <summary>The <c>__metadata__</c> string map (empty if absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensors in file order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors => [.. tensors.Values.OrderBy(t => t.Begin)];

    /// <summary>Tensor names.</summary>
    public IEnumerable<string> Names => tensors.Keys;

    /// <summary>Whether the file holds a tensor of that name.</summary>
    public bool Contains(string name) => tensors.ContainsKey(name);

    /// <summary>Metadata of one tensor.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor (the message names the file).</exception>
    public SafeTensorInfo Info(string name) =>
        tensors.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'.");

    /// <summary>Opens and validates a file's header.</summary>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"safetensors file not found: {path}", path);
        }

        using var fs = File.OpenRead(path);
        var fileLength = fs.Length;
        if (fileLength < 8)
        {
            throw new SafeTensorsFormatException(path, $"file is {fileLength} bytes, shorter than the 8-byte header length.");
        }

        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        var headerLength = BitConverter.ToUInt64(lenBytes);
        if (headerLength > (ulong)Math.Min(MaxHeaderBytes, fileLength - 8))
        {
            throw new SafeTensorsFormatException(path, $"header length {headerLength} exceeds the file size ({fileLength}) or the {MaxHeaderBytes}-byte limit.");
        }

        var header = new byte[headerLength];
        fs.ReadExactly(header);
        var dataStart = 8 + (long)headerLength;
        var dataLength = fileLength - dataStart;
        var (entries, metadata) = ParseHeader(path, header);

        long expected = 0;
        foreach (var e in entries.Values.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (e.Begin != expected)
            {
                throw new SafeTensorsFormatException(path, e.Begin < expected
                    ? $"tensor '{e.Name}' overlaps the previous tensor (starts at {e.Begin}, previous ends at {expected})."
                    : $"gap before tensor '{e.Name}' (starts at {e.Begin}, previous ends at {expected}).");
            }

            expected = e.End;
        }

        if (expected != dataLength)
        {
            throw new SafeTensorsFormatException(path, $"tensors cover {expected} bytes but the data buffer has {dataLength} (truncated or trailing bytes).");
        }

        return new SafeTensorsFile(path, dataStart, entries, metadata);
    }

    /// <summary>Reads one tensor into a new CPU tensor.</summary>
    public Tensor Read(string name)
    {
        var info = Info(name);
        var t = empty(info.Shape, info.DType);
        if (info.End > info.Begin)
        {
            using var fs = File.OpenRead(Path);
            fs.Seek(DataStart + info.Begin, SeekOrigin.Begin);
            t.ReadBytesFromStream(fs);
        }

        return t;
    }

    /// <summary>Reads every tensor (file order) into new CPU tensors.</summary>
    public Dictionary<string, Tensor> ReadAll() => Tensors.ToDictionary(t => t.Name, t => Read(t.Name));

    /// <summary>Reads every tensor of a file.</summary>
    public static Dictionary<string, Tensor> Load(string path) => Open(path).ReadAll();

    /// <summary>
    /// Writes tensors (copied to CPU, contiguous) in safetensors format. The file is written under a temporary name
    /// in the same folder and renamed into place, so a crash never leaves a partial file at <paramref name="path"/>.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var ordered = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var header = EncodeHeader([.. ordered.Select(kv => (kv.Key, kv.Value.dtype, kv.Value.shape))], metadata);

        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                fs.Write(header);
                foreach (var (_, t) in ordered)
                {
                    if (t.numel() > 0)
                    {
                        using var c = t.detach().cpu().contiguous();
                        c.WriteBytesToStream(fs);
                    }
                }

                fs.Flush(true);
            }

            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>The TorchSharp dtype of a safetensors dtype string ("F32", "U8", ...), or false if it has none.</summary>
    public static bool TryParseDType(string name, out ScalarType dtype) => DTypes.TryGetValue(name, out dtype);

    /// <summary>
    /// The first bytes of a safetensors file holding <paramref name="entries"/> in that order: the 8-byte header length
    /// and the JSON header padded with spaces to a multiple of 8. The tensors' bytes follow, back to back, in the same order.
    /// </summary>
    /// <remarks>For writers that stream tensor bytes themselves (sharded checkpoints) instead of passing tensors to <see cref="Save"/>.</remarks>
    public static byte[] EncodeHeader(IReadOnlyList<(string Name, ScalarType DType, long[] Shape)> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var headerBytes = Encoding.UTF8.GetBytes(BuildHeader(entries, metadata));
        var padded = (headerBytes.Length + 7) / 8 * 8;
        var prefix = new byte[8 + padded];
        BitConverter.TryWriteBytes(prefix.AsSpan(0, 8), (ulong)padded);
        prefix.AsSpan(8).Fill((byte)' ');
        headerBytes.CopyTo(prefix, 8);
        return prefix;
    }

    /// <summary>The safetensors dtype string of a TorchSharp dtype.</summary>
    public static string DTypeString(ScalarType dtype) =>
        DTypes.FirstOrDefault(kv => kv.Value == dtype).Key ?? throw new ArgumentException($"dtype {dtype} has no safetensors name.", nameof(dtype));

    private static string BuildHeader(IReadOnlyList<(string Name, ScalarType DType, long[] Shape)> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata)
                {
                    w.WriteString(k, v);
                }

                w.WriteEndObject();
            }

            long offset = 0;
            foreach (var (name, dtype, shape) in ordered)
            {
                if (name == "__metadata__")
                {
                    throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor.", nameof(ordered));
                }

                var bytes = shape.Aggregate(1L, (a, b) => a * b) * TensorMemory.ElementSize(dtype);
                w.WriteStartObject(name);
                w.WriteString("dtype", DTypeString(dtype));
                w.WriteStartArray("shape");
                foreach (var d in shape)
                {
                    w.WriteNumberValue(d);
                }

                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }

            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(ms.ToArray());
    }

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException ex)
        {
            throw new SafeTensorsFormatException(path, $"header is not valid JSON: {ex.Message}", ex);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new SafeTensorsFormatException(path, "header is not a JSON object.");
            }

            var entries = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__")
                {
                    if (p.Value.ValueKind != JsonValueKind.Object)
                    {
                        throw new SafeTensorsFormatException(path, "__metadata__ must be an object of strings.");
                    }

                    foreach (var m in p.Value.EnumerateObject())
                    {
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String
                            ? m.Value.GetString()!
                            : throw new SafeTensorsFormatException(path, $"__metadata__ value '{m.Name}' is not a string.");
                    }

                    continue;
                }

                if (!entries.TryAdd(p.Name, ParseEntry(path, p.Name, p.Value)))
                {
                    throw new SafeTensorsFormatException(path, $"duplicate tensor name '{p.Name}'.");
                }
            }

            return (entries, metadata);
        }
    }

    private static SafeTensorInfo ParseEntry(string path, string name, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': entry is not an object.");
        }

        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': missing dtype.");
        }

        if (!DTypes.TryGetValue(dt.GetString()!, out var dtype))
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': unsupported dtype '{dt.GetString()}'.");
        }

        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': missing shape.");
        }

        var shape = new List<long>();
        long numel = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0)
            {
                throw new SafeTensorsFormatException(path, $"tensor '{name}': shape must hold non-negative integers; got {sh.GetRawText()}.");
            }

            shape.Add(v);
            try
            {
                numel = checked(numel * v);
            }
            catch (OverflowException)
            {
                throw new SafeTensorsFormatException(path, $"tensor '{name}': shape {sh.GetRawText()} overflows.");
            }
        }

        if (!e.TryGetProperty("data_offsets", out var offs) || offs.ValueKind != JsonValueKind.Array || offs.GetArrayLength() != 2)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': data_offsets must be [begin, end].");
        }

        if (!offs[0].TryGetInt64(out var begin) || !offs[1].TryGetInt64(out var end) || begin < 0 || end < begin)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': invalid data_offsets {offs.GetRawText()}.");
        }

        long expectedBytes;
        try
        {
            expectedBytes = checked(numel * TensorMemory.ElementSize(dtype));
        }
        catch (OverflowException)
        {
            throw new SafeTensorsFormatException(path, $"tensor '{name}': size overflows.");
        }

        if (end - begin != expectedBytes)
        {
            throw new SafeTensorsFormatException(path,
                $"tensor '{name}': data_offsets {offs.GetRawText()} span {end - begin} bytes but dtype {dt.GetString()} and shape {sh.GetRawText()} need {expectedBytes}.");
        }

        return new SafeTensorInfo(name, dtype, [.. shape], begin, end);
    }
}

/// <summary>A safetensors file that does not follow the format; the message names the file and the problem.</summary>
public sealed class SafeTensorsFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public SafeTensorsFormatException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner) => FilePath = path;

    /// <summary>Creates the exception.</summary>
    public SafeTensorsFormatException()
        : this("?", "invalid safetensors file.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public SafeTensorsFormatException(string message)
        : this("?", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public SafeTensorsFormatException(string message, Exception innerException)
        : this("?", message, innerException)
    {
    }

    /// <summary>The offending file.</summary>
    public string FilePath { get; }
}
