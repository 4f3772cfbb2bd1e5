using System.Text.Json;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// What one rank wrote (or why it could not): its files and, per tensor, where the bytes landed with their checksums.
/// Rank 0 turns every rank's manifest into the index. Ranks other than 0 list the replicated tensors with checksums
/// only (they write no copy), so rank 0 can check every rank holds the same ones.
/// </summary>
internal sealed record RankManifest
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public required int Rank { get; init; }

    /// <summary>Why this rank failed, or null.</summary>
    public string? Error { get; init; }

    public IReadOnlyList<CheckpointFileRecord> Files { get; init; } = [];

    /// <summary>This rank's slice of every sharded tensor (each record holds one slice).</summary>
    public IReadOnlyList<ShardedTensorRecord> Tensors { get; init; } = [];

    public IReadOnlyList<StoredTensorRecord> Replicated { get; init; } = [];

    public IReadOnlyList<StoredTensorRecord> Extras { get; init; } = [];

    public static RankManifest Failed(int rank, Exception ex) => new() { Rank = rank, Error = $"{ex.GetType().Name}: {ex.Message}" };

    public byte[] ToUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    public static RankManifest FromUtf8(ReadOnlySpan<byte> utf8) =>
        JsonSerializer.Deserialize<RankManifest>(utf8, Json) ?? throw new InvalidOperationException("empty rank manifest.");
}
