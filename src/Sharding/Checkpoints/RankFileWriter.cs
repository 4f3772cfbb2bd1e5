using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>One rank's slice of a sharded tensor to write: its split, and what produces the slice's bytes.</summary>
internal sealed record ShardSource(string Name, ScalarType DType, long[] GlobalShape, long Atoms, long UnitsPerAtom, ShardRange Range, Action<ByteSink> Produce);

/// <summary>A tensor stored whole (replicated, or an extra): what produces its bytes.</summary>
internal sealed record StoredSource(string Name, ScalarType DType, long[] Shape, Action<ByteSink> Produce);

/// <summary>
/// Writes one rank's files — <c>rank-R-of-N.safetensors</c> (its slices and extras) and, on rank 0,
/// <c>replicated.safetensors</c> — and returns the manifest rank 0 builds the index from. The same writer serves a live
/// save (bytes from tensors) and offline resharding (bytes from an older checkpoint's files).
/// </summary>
internal static class RankFileWriter
{
    /// <summary>Key prefix of extras in a rank file (sharded tensor names may not start with it).</summary>
    public const string ExtraPrefix = "__extra__/";

    public static RankManifest Write(string folder, int rank, int worldSize, IReadOnlyList<ShardSource> shards, IReadOnlyList<StoredSource> replicated, IReadOnlyList<StoredSource> extras)
    {
        var rankFile = CheckpointPaths.RankFile(rank, worldSize);
        var entries = shards.Select(s => new FileEntry(s.Name, s.DType, [s.Range.Length], s.Produce))
            .Concat(extras.Select(e => new FileEntry(ExtraPrefix + e.Name, e.DType, e.Shape, e.Produce)))
            .ToList();
        var written = CheckpointFileWriter.Write(Path.Combine(folder, rankFile), entries);
        var files = new List<CheckpointFileRecord> { FileRecord(written) };

        List<StoredTensorRecord> replicatedRecords;
        if (rank == 0)
        {
            var rep = CheckpointFileWriter.Write(
                Path.Combine(folder, CheckpointPaths.ReplicatedFile),
                [.. replicated.Select(r => new FileEntry(r.Name, r.DType, r.Shape, r.Produce))]);
            files.Add(FileRecord(rep));
            replicatedRecords = [.. replicated.Select(r => Stored(r, 0, rep, r.Name))];
        }
        else
        {
            replicatedRecords = [.. replicated.Select(r => Stored(r, rank, null, r.Name) with { Checksum = ChecksumOf(r.Produce) })];
        }

        return new RankManifest
        {
            Rank = rank,
            Files = files,
            Tensors = [.. shards.Select(s =>
            {
                var w = written.Entries[s.Name];
                return new ShardedTensorRecord
                {
                    Name = s.Name,
                    DType = SafeTensorsFile.DTypeString(s.DType),
                    GlobalShape = s.GlobalShape,
                    UnitsPerAtom = s.UnitsPerAtom,
                    Atoms = s.Atoms,
                    Slices = [new SliceRecord { Rank = rank, File = rankFile, Key = s.Name, Offset = w.Offset, Bytes = w.Bytes, Start = s.Range.Start, Length = s.Range.Length, Checksum = w.Checksum }],
                };
            })],
            Replicated = replicatedRecords,
            Extras = [.. extras.Select(e => Stored(e, rank, written, ExtraPrefix + e.Name))],
        };
    }

    private static CheckpointFileRecord FileRecord(WrittenFile f) => new() { Name = f.Name, Size = f.Size, Checksum = f.Checksum };

    private static StoredTensorRecord Stored(StoredSource s, int rank, WrittenFile? file, string key)
    {
        var w = file?.Entries[key];
        return new StoredTensorRecord
        {
            Name = s.Name,
            Rank = rank,
            DType = SafeTensorsFile.DTypeString(s.DType),
            Shape = s.Shape,
            File = file?.Name ?? string.Empty,
            Key = key,
            Offset = w?.Offset ?? 0,
            Bytes = w?.Bytes ?? 0,
            Checksum = w?.Checksum ?? string.Empty,
        };
    }

    private static string ChecksumOf(Action<ByteSink> produce)
    {
        var hash = Checksum.Create();
        produce(chunk => hash.Append(chunk));
        return Checksum.Format(hash);
    }
}
