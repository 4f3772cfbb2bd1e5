using System.Text.Json;
using System.Text.Json.Serialization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// The index of a sharded checkpoint (<c>index.json</c>, written last): who saved what, where every byte is and its
/// checksum. Offsets are absolute byte positions in the named file, so any slice can be read without the file's header.
/// </summary>
public sealed record CheckpointIndex
{
    /// <summary>The <see cref="Format"/> value of this kind of index.</summary>
    public const string FormatName = "bnbdist.sharded-checkpoint";

    /// <summary>The <see cref="FormatVersion"/> this library writes and reads.</summary>
    public const int CurrentVersion = 1;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping, // readable '+' and quotes; the index is never embedded in HTML
    };

    /// <summary>Always <see cref="FormatName"/>.</summary>
    public required string Format { get; init; }

    /// <summary>Always <see cref="CurrentVersion"/> for now.</summary>
    public required int FormatVersion { get; init; }

    /// <summary>Training step the checkpoint was taken at.</summary>
    public required long Step { get; init; }

    /// <summary>Ranks that saved it (one rank file each).</summary>
    public required int WorldSize { get; init; }

    /// <summary>Version of BnbDist that wrote it.</summary>
    public required string LibraryVersion { get; init; }

    /// <summary>The caller's config fingerprint (see <see cref="CheckpointSaveOptions.ConfigFingerprint"/>).</summary>
    public required string ConfigFingerprint { get; init; }

    /// <summary>When rank 0 committed it (UTC, ISO 8601).</summary>
    public required string CreatedUtc { get; init; }

    /// <summary>Checksum algorithm of every checksum below ("xxh3-64").</summary>
    public required string ChecksumAlgorithm { get; init; }

    /// <summary>The world size of the checkpoint this one was resharded from offline, or null.</summary>
    public int? ReshardedFromWorldSize { get; init; }

    /// <summary>Every file of the checkpoint but the index.</summary>
    public required IReadOnlyList<CheckpointFileRecord> Files { get; init; }

    /// <summary>The sharded tensors, by name.</summary>
    public required IReadOnlyList<ShardedTensorRecord> Tensors { get; init; }

    /// <summary>The replicated tensors (in <see cref="CheckpointPaths.ReplicatedFile"/>).</summary>
    public required IReadOnlyList<StoredTensorRecord> Replicated { get; init; }

    /// <summary>Every rank's extras (in its rank file).</summary>
    public required IReadOnlyList<StoredTensorRecord> Extras { get; init; }

    /// <summary>The index as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Parses an index; any JSON or structural problem is a <see cref="CheckpointError.BadIndex"/> naming <paramref name="path"/>.</summary>
    public static CheckpointIndex Parse(string json, string path)
    {
        CheckpointIndex? index;
        try
        {
            index = JsonSerializer.Deserialize<CheckpointIndex>(json, Json);
        }
        catch (JsonException ex)
        {
            throw new CheckpointException(CheckpointError.BadIndex, path, null, $"not a valid index: {ex.Message}", ex);
        }

        if (index is null)
        {
            throw new CheckpointException(CheckpointError.BadIndex, path, null, "the index is JSON null.");
        }

        CheckpointIndexValidator.Validate(index, path);
        return index;
    }

    /// <summary>Reads and validates <c>index.json</c> of a checkpoint folder; a missing one is <see cref="CheckpointError.Incomplete"/>.</summary>
    public static CheckpointIndex Read(string checkpointFolder)
    {
        var path = Path.Combine(checkpointFolder, CheckpointPaths.IndexFile);
        if (!File.Exists(path))
        {
            throw new CheckpointException(CheckpointError.Incomplete, checkpointFolder, null, $"no {CheckpointPaths.IndexFile}: the save did not finish (or this is not a checkpoint).");
        }

        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>The record of sharded tensor <paramref name="name"/>, or null.</summary>
    public ShardedTensorRecord? TensorRecord(string name) => Tensors.FirstOrDefault(t => t.Name == name);

    /// <summary>The record of file <paramref name="name"/>, or null.</summary>
    public CheckpointFileRecord? FileRecord(string name) => Files.FirstOrDefault(f => f.Name == name);
}

/// <summary>One file of a checkpoint: name (in the checkpoint folder), size in bytes and whole-file checksum.</summary>
public sealed record CheckpointFileRecord
{
    /// <summary>File name, relative to the checkpoint folder.</summary>
    public required string Name { get; init; }

    /// <summary>Size in bytes.</summary>
    public required long Size { get; init; }

    /// <summary>Checksum of all its bytes.</summary>
    public required string Checksum { get; init; }
}

/// <summary>A sharded tensor: dtype, global shape, its split (atoms, units per atom) and one slice per saving rank.</summary>
public sealed record ShardedTensorRecord
{
    /// <summary>Unique name.</summary>
    public required string Name { get; init; }

    /// <summary>safetensors dtype ("U8", "F32", ...).</summary>
    [JsonPropertyName("dtype")]
    public required string DType { get; init; }

    /// <summary>Shape of the whole tensor.</summary>
    public required long[] GlobalShape { get; init; }

    /// <summary>Elements per atom (quantization or optimizer-state block).</summary>
    public required long UnitsPerAtom { get; init; }

    /// <summary>Atoms of the whole tensor (the last may be partial).</summary>
    public required long Atoms { get; init; }

    /// <summary>The saving ranks' slices, rank order, exactly <see cref="ShardLayout.Slice"/> of the saved world size.</summary>
    public required IReadOnlyList<SliceRecord> Slices { get; init; }

    /// <summary>Elements of the whole tensor.</summary>
    [JsonIgnore]
    public long Length => GlobalShape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>Where one rank's slice of a sharded tensor is stored.</summary>
public sealed record SliceRecord
{
    /// <summary>The rank that saved it.</summary>
    public required int Rank { get; init; }

    /// <summary>Its file.</summary>
    public required string File { get; init; }

    /// <summary>Its key in the file's safetensors header.</summary>
    public required string Key { get; init; }

    /// <summary>Absolute offset of its first byte in the file.</summary>
    public required long Offset { get; init; }

    /// <summary>Its size in bytes.</summary>
    public required long Bytes { get; init; }

    /// <summary>First element of the whole (flattened) tensor it holds.</summary>
    public required long Start { get; init; }

    /// <summary>Elements it holds.</summary>
    public required long Length { get; init; }

    /// <summary>Checksum of its bytes.</summary>
    public required string Checksum { get; init; }
}

/// <summary>A tensor stored whole: a replicated tensor, or one rank's extra.</summary>
public sealed record StoredTensorRecord
{
    /// <summary>Name (unique among replicated tensors, or among one rank's extras).</summary>
    public required string Name { get; init; }

    /// <summary>The rank whose extra it is (0 for replicated tensors).</summary>
    public required int Rank { get; init; }

    /// <summary>safetensors dtype.</summary>
    [JsonPropertyName("dtype")]
    public required string DType { get; init; }

    /// <summary>Shape.</summary>
    public required long[] Shape { get; init; }

    /// <summary>Its file.</summary>
    public required string File { get; init; }

    /// <summary>Its key in the file's safetensors header.</summary>
    public required string Key { get; init; }

    /// <summary>Absolute offset of its first byte in the file.</summary>
    public required long Offset { get; init; }

    /// <summary>Its size in bytes.</summary>
    public required long Bytes { get; init; }

    /// <summary>Checksum of its bytes.</summary>
    public required string Checksum { get; init; }
}
