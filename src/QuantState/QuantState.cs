using System.Globalization;
using System.Text;
using System.Text.Json;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist;

/// <summary>
/// Everything needed to dequantize a blockwise-quantized tensor, laid out as bitsandbytes' <c>QuantState</c>:
/// absmax, original shape and dtype, block size, code book, 4-bit type and, for double quantization, the
/// offset and nested state.
/// </summary>
/// <remarks>
/// <see cref="ToDictionary"/> / <see cref="FromDictionary"/> produce and read bitsandbytes' packed serialized form
/// (the tensors plus a <c>quant_state.bitsandbytes__nf4|fp4</c> u8 tensor holding the other fields as JSON),
/// byte for byte, so Hugging Face bnb-4bit checkpoints load and save unchanged.
/// </remarks>
public sealed class QuantState
{
    /// <summary>The serialized keys bitsandbytes accepts (before any module prefix).</summary>
    public static readonly IReadOnlyList<string> ValidKeys =
    [
        "absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state", "quant_type",
        "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset",
    ];

    /// <summary>Creates a state. For double quantization pass both <paramref name="offset"/> and <paramref name="state2"/>.</summary>
    public QuantState(Tensor absmax, long[] shape, ScalarType dtype, int blocksize, Tensor code, QuantType? quantType = null,
        Tensor? offset = null, QuantState? state2 = null)
    {
        ArgumentNullException.ThrowIfNull(absmax);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(code);
        if ((offset is null) != (state2 is null))
        {
            throw new ArgumentException("offset and state2 must be given together (double quantization) or not at all.", nameof(offset));
        }

        Absmax = absmax;
        Shape = (long[])shape.Clone();
        DType = dtype;
        BlockSize = blocksize;
        Code = code;
        QuantType = quantType;
        Offset = offset;
        State2 = state2;
    }

    /// <summary>Per-block absmax: f32, or u8 codes when <see cref="Nested"/>.</summary>
    public Tensor Absmax { get; }

    /// <summary>Shape of the original (unquantized) tensor.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>dtype of the original tensor, and of dequantized output.</summary>
    public ScalarType DType { get; }

    /// <summary>Elements per quantization block.</summary>
    public int BlockSize { get; }

    /// <summary>The code book: 16 values for 4-bit (bitsandbytes' <c>quant_map</c>), 256 for 8-bit.</summary>
    /// <remarks>States made by <see cref="Functional"/> share one cached code-book tensor per device: read it, don't modify it in place.</remarks>
    public Tensor Code { get; }

    /// <summary>NF4 or FP4 for 4-bit states; null for 8-bit.</summary>
    public QuantType? QuantType { get; }

    /// <summary>Mean subtracted from absmax before nested quantization (f32 scalar), or null.</summary>
    public Tensor? Offset { get; }

    /// <summary>The nested (double-quantization) state of the absmax, or null.</summary>
    public QuantState? State2 { get; }

    /// <summary>Whether the absmax is itself quantized (bitsandbytes' <c>compress_statistics</c>).</summary>
    public bool Nested => State2 is not null;

    /// <summary>Number of elements of the original tensor.</summary>
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>
    /// Detaches every tensor of the state from the current DisposeScope, so that a state made inside a scope (say, by a
    /// module that quantizes lazily in its first forward) outlives it. Returns this state.
    /// </summary>
    public QuantState DetachFromDisposeScope()
    {
        Absmax.DetachFromDisposeScope();
        Code.DetachFromDisposeScope();
        Offset?.DetachFromDisposeScope();
        State2?.DetachFromDisposeScope();
        return this;
    }

    /// <summary>Moves every tensor of the state to <paramref name="device"/> (a new state; this one is unchanged).</summary>
    public QuantState To(Device device) =>
        new(Absmax.to(device), [.. Shape], DType, BlockSize, Code.to(device), QuantType, Offset?.to(device), State2?.To(device));

    /// <summary>
    /// The packed serialized form, exactly bitsandbytes' <c>QuantState.as_dict(packed=True)</c>: keys
    /// <c>absmax</c>, <c>quant_map</c>, [<c>nested_absmax</c>, <c>nested_quant_map</c>] and
    /// <c>quant_state.bitsandbytes__&lt;type&gt;</c>. Only 4-bit states can be packed (as in bitsandbytes).
    /// </summary>
    public Dictionary<string, Tensor> ToDictionary()
    {
        var result = PackedMetadata();
        result["absmax"] = Absmax.cpu();
        if (State2 is not null)
        {
            result["nested_absmax"] = State2.Absmax.cpu();
        }

        return result;
    }

    /// <summary>
    /// The entries of <see cref="ToDictionary"/> that are not per-block statistics: <c>quant_map</c>,
    /// [<c>nested_quant_map</c>] and the packed JSON, as new CPU tensors. They are the same on every rank of a sharded
    /// model, so sharded checkpoints store them whole.
    /// </summary>
    public Dictionary<string, Tensor> PackedMetadata()
    {
        if (QuantType is not BnbDist.QuantType type)
        {
            throw new InvalidOperationException("Only 4-bit quant states (NF4/FP4) have bitsandbytes' packed serialized form.");
        }

        // Code books may be the shared CodeBooks cache: hand out copies, so disposing the dictionary is always safe.
        var result = new Dictionary<string, Tensor> { ["quant_map"] = CopyToCpu(Code) };
        if (State2 is not null)
        {
            result["nested_quant_map"] = CopyToCpu(State2.Code);
        }

        result[PackedKey(type)] = tensor(Encoding.UTF8.GetBytes(PackedJson()), ScalarType.Byte);
        return result;
    }

    /// <summary>The key of the packed JSON tensor for a 4-bit type: <c>quant_state.bitsandbytes__nf4</c> or <c>__fp4</c>.</summary>
    public static string PackedKey(QuantType type) => "quant_state.bitsandbytes__" + QuantTypeName(type);

    /// <summary>
    /// Reads bitsandbytes' packed serialized form (the inverse of <see cref="ToDictionary"/>); key prefixes such as
    /// <c>weight.</c> are ignored. Tensors are moved to <paramref name="device"/>.
    /// </summary>
    /// <exception cref="QuantStateFormatException">A missing, extra, mistyped or inconsistent entry, named in the message.</exception>
    public static QuantState FromDictionary(IReadOnlyDictionary<string, Tensor> dictionary, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(dictionary);
        device ??= CPU;
        var entries = new Dictionary<string, (string Key, Tensor Value)>();
        string? packedKey = null;
        foreach (var (key, value) in dictionary)
        {
            if (key.Contains("quant_state.bitsandbytes__", StringComparison.Ordinal))
            {
                if (packedKey is not null)
                {
                    throw new QuantStateFormatException(key, $"more than one packed quant_state entry ({packedKey} and {key}).");
                }

                packedKey = key;
                continue;
            }

            var shortKey = key[(key.LastIndexOf('.') + 1)..];
            if (!ValidKeys.Contains(shortKey))
            {
                throw new QuantStateFormatException(key, $"unexpected key; a quant state has only {string.Join(", ", ValidKeys)}.");
            }

            entries[shortKey] = (key, value);
        }

        if (packedKey is null)
        {
            throw new QuantStateFormatException("quant_state.bitsandbytes__nf4|fp4", "missing: the packed quant_state entry is required.");
        }

        var suffix = packedKey[(packedKey.LastIndexOf("__", StringComparison.Ordinal) + 2)..];
        var packedType = ParseQuantType(suffix, packedKey);
        var json = ReadPackedJson(packedKey, dictionary[packedKey]);

        var quantTypeName = json.RequireString("quant_type");
        if (ParseQuantType(quantTypeName, packedKey) != packedType)
        {
            throw new QuantStateFormatException(packedKey, $"quant_type \"{quantTypeName}\" disagrees with the key suffix \"{suffix}\".");
        }

        var blocksize = json.RequireInt("blocksize");
        var dtype = ParseDType(json.RequireString("dtype"), packedKey);
        var shape = json.RequireShape("shape");
        var numel = shape.Aggregate(1L, (a, b) => a * b);
        var blocks = (numel + blocksize - 1) / blocksize;
        var nested = json.Has("nested_blocksize");

        var absmax = Require(entries, "absmax", nested ? ScalarType.Byte : ScalarType.Float32, blocks);
        var quantMap = Require(entries, "quant_map", ScalarType.Float32, 16);
        QuantState? state2 = null;
        Tensor? offset = null;
        if (nested)
        {
            var nestedBlocksize = json.RequireInt("nested_blocksize");
            var nestedDtype = ParseDType(json.RequireString("nested_dtype"), packedKey);
            var nestedOffset = json.RequireDouble("nested_offset");
            var nestedAbsmax = Require(entries, "nested_absmax", ScalarType.Float32, (blocks + nestedBlocksize - 1) / nestedBlocksize);
            var nestedMap = Require(entries, "nested_quant_map", ScalarType.Float32, 256);
            state2 = new QuantState(nestedAbsmax.to(device), [blocks], nestedDtype, nestedBlocksize, nestedMap.to(device));
            offset = tensor((float)nestedOffset, ScalarType.Float32).to(device);
        }
        else if (entries.ContainsKey("nested_absmax") || entries.ContainsKey("nested_quant_map"))
        {
            throw new QuantStateFormatException(packedKey, "nested tensors are present but the packed JSON has no nested_blocksize.");
        }

        return new QuantState(absmax.to(device), shape, dtype, blocksize, quantMap.to(device), packedType, offset, state2);
    }

    /// <summary>
    /// Reads the packed JSON of a 4-bit state (the u8 tensor <paramref name="key"/>, e.g.
    /// <c>weight.quant_state.bitsandbytes__nf4</c>) without any tensor, so byte-level tools can check a checkpoint.
    /// </summary>
    /// <exception cref="QuantStateFormatException">Malformed JSON, a missing, extra or mistyped field, or a quant_type that disagrees with the key.</exception>
    public static PackedQuantStateFields ParsePackedJson(string key, byte[] json)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(json);
        var f = ParseFields(key, json);
        var type = ParseQuantType(f.RequireString("quant_type"), key);
        var suffix = key[(key.LastIndexOf("__", StringComparison.Ordinal) + 2)..];
        if (ParseQuantType(suffix, key) != type)
        {
            throw new QuantStateFormatException(key, $"quant_type \"{QuantTypeName(type)}\" disagrees with the key suffix \"{suffix}\".");
        }

        var nested = f.Has("nested_blocksize");
        return new PackedQuantStateFields(type, f.RequireInt("blocksize"), ParseDType(f.RequireString("dtype"), key), f.RequireShape("shape"),
            nested ? f.RequireInt("nested_blocksize") : null, nested ? f.RequireDouble("nested_offset") : null);
    }

    /// <summary>bitsandbytes' name of a dtype ("float32", "bfloat16", "float16", ...).</summary>
    public static string DTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        ScalarType.Float64 => "float64",
        ScalarType.Byte => "uint8",
        ScalarType.Int8 => "int8",
        _ => throw new ArgumentException($"No bitsandbytes name for dtype {dtype}.", nameof(dtype)),
    };

    /// <summary>bitsandbytes' name of a 4-bit type.</summary>
    public static string QuantTypeName(QuantType type) => type == BnbDist.QuantType.NF4 ? "nf4" : "fp4";

    /// <summary>The JSON text bitsandbytes packs: Python's json.dumps of the non-tensor fields, in its key order.</summary>
    internal string PackedJson()
    {
        var sb = new StringBuilder();
        sb.Append("{\"quant_type\": \"").Append(QuantTypeName(QuantType!.Value)).Append('"');
        sb.Append(", \"blocksize\": ").Append(BlockSize.ToString(CultureInfo.InvariantCulture));
        sb.Append(", \"dtype\": \"").Append(DTypeName(DType)).Append('"');
        sb.Append(", \"shape\": [").Append(string.Join(", ", Shape.Select(s => s.ToString(CultureInfo.InvariantCulture)))).Append(']');
        if (State2 is not null)
        {
            sb.Append(", \"nested_blocksize\": ").Append(State2.BlockSize.ToString(CultureInfo.InvariantCulture));
            sb.Append(", \"nested_dtype\": \"").Append(DTypeName(State2.DType)).Append('"');
            sb.Append(", \"nested_offset\": ").Append(PythonFloat.Repr(Offset!.cpu().item<float>()));
        }

        return sb.Append('}').ToString();
    }

    private static Tensor CopyToCpu(Tensor t) => t.device_type == TorchSharp.DeviceType.CPU ? t.clone() : t.cpu();

    private static Tensor Require(Dictionary<string, (string Key, Tensor Value)> entries, string name, ScalarType dtype, long numel)
    {
        if (!entries.TryGetValue(name, out var e))
        {
            throw new QuantStateFormatException(name, "missing.");
        }

        if (e.Value.dtype != dtype)
        {
            throw new QuantStateFormatException(e.Key, $"must be {dtype}; got {e.Value.dtype}.");
        }

        if (e.Value.numel() != numel)
        {
            throw new QuantStateFormatException(e.Key, $"must have {numel} elements; got {e.Value.numel()}.");
        }

        return e.Value.contiguous();
    }

    private static PackedFields ReadPackedJson(string key, Tensor blob)
    {
        if (blob.dtype != ScalarType.Byte || blob.dim() != 1)
        {
            throw new QuantStateFormatException(key, $"must be a 1-D uint8 tensor of UTF-8 JSON; got {blob.dtype} [{string.Join(", ", blob.shape)}].");
        }

        return ParseFields(key, blob.cpu().contiguous().data<byte>().ToArray());
    }

    private static PackedFields ParseFields(string key, byte[] bytes)
    {
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new QuantStateFormatException(key, "the packed JSON is not an object.");
            }

            var fields = new PackedFields(key, doc.RootElement.Clone());
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!ValidKeys.Contains(p.Name))
                {
                    throw new QuantStateFormatException(key, $"the packed JSON has an unexpected field \"{p.Name}\".");
                }
            }

            return fields;
        }
        catch (JsonException ex)
        {
            throw new QuantStateFormatException(key, $"the packed JSON is malformed: {ex.Message}", ex);
        }
    }

    private static QuantType ParseQuantType(string name, string key) => name switch
    {
        "nf4" => BnbDist.QuantType.NF4,
        "fp4" => BnbDist.QuantType.FP4,
        _ => throw new QuantStateFormatException(key, $"unknown quant_type \"{name}\" (expected nf4 or fp4)."),
    };

    private static ScalarType ParseDType(string name, string key) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        "float16" => ScalarType.Float16,
        "float64" => ScalarType.Float64,
        _ => throw new QuantStateFormatException(key, $"unsupported dtype \"{name}\"."),
    };

    private sealed class PackedFields(string key, JsonElement root)
    {
        public bool Has(string name) => root.TryGetProperty(name, out _);

        public string RequireString(string name) =>
            Get(name, JsonValueKind.String).GetString() ?? throw new QuantStateFormatException(key, $"\"{name}\" is null.");

        public int RequireInt(string name)
        {
            var e = Get(name, JsonValueKind.Number);
            if (!e.TryGetInt32(out var v) || v <= 0)
            {
                throw new QuantStateFormatException(key, $"\"{name}\" must be a positive integer; got {e.GetRawText()}.");
            }

            return v;
        }

        public double RequireDouble(string name) => Get(name, JsonValueKind.Number).GetDouble();

        public long[] RequireShape(string name)
        {
            var e = Get(name, JsonValueKind.Array);
            var dims = new List<long>();
            foreach (var d in e.EnumerateArray())
            {
                if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0)
                {
                    throw new QuantStateFormatException(key, $"\"{name}\" must be a list of non-negative integers; got {e.GetRawText()}.");
                }

                dims.Add(v);
            }

            return [.. dims];
        }

        private JsonElement Get(string name, JsonValueKind kind)
        {
            if (!root.TryGetProperty(name, out var e))
            {
                throw new QuantStateFormatException(key, $"the packed JSON lacks \"{name}\".");
            }

            if (e.ValueKind != kind)
            {
                throw new QuantStateFormatException(key, $"\"{name}\" must be a JSON {kind}; got {e.ValueKind}.");
            }

            return e;
        }
    }
}

/// <summary>The non-tensor fields of a packed 4-bit quant state (see <see cref="QuantState.ParsePackedJson"/>).</summary>
/// <param name="QuantType">NF4 or FP4.</param>
/// <param name="BlockSize">Elements per block.</param>
/// <param name="DType">dtype of the original tensor.</param>
/// <param name="Shape">Shape of the original tensor.</param>
/// <param name="NestedBlockSize">Absmax values per nested block when double-quantized, else null.</param>
/// <param name="NestedOffset">The double-quant offset, else null.</param>
public sealed record PackedQuantStateFields(QuantType QuantType, int BlockSize, ScalarType DType, long[] Shape, int? NestedBlockSize, double? NestedOffset)
{
    /// <summary>Elements of the original tensor.</summary>
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Quantization blocks (absmax values).</summary>
    public long Blocks => (NumElements + BlockSize - 1) / BlockSize;
}

/// <summary>A serialized quant state that is missing entries, has extra ones, or holds inconsistent values.</summary>
public sealed class QuantStateFormatException : FormatException
{
    /// <summary>Creates the exception for <paramref name="key"/>.</summary>
    public QuantStateFormatException(string key, string problem, Exception? inner = null)
        : base($"Quant state entry '{key}': {problem}", inner) => Key = key;

    /// <summary>Creates the exception.</summary>
    public QuantStateFormatException()
        : this("?", "invalid quant state.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public QuantStateFormatException(string message)
        : this("?", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public QuantStateFormatException(string message, Exception innerException)
        : this("?", message, innerException)
    {
    }

    /// <summary>The key (with any prefix) that is wrong.</summary>
    public string Key { get; }
}
