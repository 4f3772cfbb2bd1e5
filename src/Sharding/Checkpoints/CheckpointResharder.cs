using BnbDist.Serialization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Offline resharding: writes a copy of a checkpoint for another world size, moving bytes only (each new slice is
/// assembled from the byte ranges of the old slices it overlaps, as a resharding load does), so the full tensors are
/// byte-identical and nothing is re-quantized.
/// </summary>
public static class CheckpointResharder
{
    /// <summary>
    /// Writes checkpoint <paramref name="source"/> resharded to <paramref name="worldSize"/> ranks into the new folder
    /// <paramref name="destination"/> (index last) and returns its index. Rank r keeps old rank r's extras (ranks that
    /// did not exist before get none).
    /// </summary>
    public static CheckpointIndex Reshard(string source, string destination, int worldSize, bool verify = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(worldSize);
        ArgumentException.ThrowIfNullOrEmpty(destination);
        if (Directory.Exists(destination) && Directory.EnumerateFileSystemEntries(destination).Any())
        {
            throw new CheckpointException(CheckpointError.SaveFailed, destination, null, "the destination exists and is not empty.");
        }

        using var old = CheckpointFolder.Open(source);
        Directory.CreateDirectory(destination);
        var index = old.Index;
        var replicated = index.Replicated.Select(e => Stored(old, e, verify)).ToList();
        var manifests = new List<RankManifest>();
        for (var rank = 0; rank < worldSize; rank++)
        {
            var r = rank;
            var shards = index.Tensors.Select(t =>
            {
                SafeTensorsFile.TryParseDType(t.DType, out var dtype);
                var range = new ShardLayout(t.Atoms, worldSize).Slice(r, t.Length, t.UnitsPerAtom);
                return new ShardSource(t.Name, dtype, t.GlobalShape, t.Atoms, t.UnitsPerAtom, range, sink => old.ReadSlice(t, range, sink, verify));
            }).ToList();
            var extras = index.Extras.Where(e => e.Rank == r).Select(e => Stored(old, e, verify)).ToList();
            manifests.Add(RankFileWriter.Write(destination, r, worldSize, shards, replicated, extras));
        }

        var resharded = IndexBuilder.Build(manifests, index.Step, worldSize, index.ConfigFingerprint, destination, reshardedFrom: index.WorldSize);
        DurableFiles.WriteAllText(Path.Combine(destination, CheckpointPaths.IndexFile), resharded.ToJson(), CheckpointPaths.IndexFile);
        return resharded;
    }

    internal static StoredSource Stored(CheckpointFolder folder, StoredTensorRecord e, bool verify)
    {
        SafeTensorsFile.TryParseDType(e.DType, out var dtype);
        return new StoredSource(e.Name, dtype, e.Shape, sink => folder.ReadStored(e, sink, verify));
    }
}
