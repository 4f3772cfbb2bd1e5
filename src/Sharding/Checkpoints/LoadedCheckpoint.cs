using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// What a rank loaded: its slice of every sharded tensor in the current world's layout, the replicated tensors and
/// (when the world size is unchanged) its own extras. The tensors are new CPU tensors owned by this object.
/// </summary>
public sealed class LoadedCheckpoint : IDisposable
{
    private readonly HashSet<string> borrowed;

    internal LoadedCheckpoint(string folder, CheckpointIndex index, int rank, int worldSize, Dictionary<string, ShardedTensor> sharded,
        Dictionary<string, Tensor> replicated, Dictionary<string, Tensor> extras, IReadOnlyList<string> skipped, HashSet<string> borrowed)
    {
        this.borrowed = borrowed;
        Folder = folder;
        Index = index;
        Rank = rank;
        WorldSize = worldSize;
        Sharded = sharded;
        Replicated = replicated;
        Extras = extras;
        Skipped = skipped;
    }

    /// <summary>The checkpoint folder loaded.</summary>
    public string Folder { get; }

    /// <summary>Its index.</summary>
    public CheckpointIndex Index { get; }

    /// <summary>Its step.</summary>
    public long Step => Index.Step;

    /// <summary>The loading rank.</summary>
    public int Rank { get; }

    /// <summary>The loading world size (the layouts of <see cref="Sharded"/>).</summary>
    public int WorldSize { get; }

    /// <summary>Whether it was saved with another world size (its slices were re-cut, bytes unchanged).</summary>
    public bool Resharded => Index.WorldSize != WorldSize;

    /// <summary>
    /// This rank's slice of every sharded tensor, by name, laid out for <see cref="WorldSize"/> ranks: the caller's own
    /// <see cref="ShardedTensor"/> objects for those loaded in place (see <see cref="ShardedCheckpointer.Load"/>), new ones for the rest.
    /// </summary>
    public IReadOnlyDictionary<string, ShardedTensor> Sharded { get; }

    /// <summary>The replicated tensors, by name.</summary>
    public IReadOnlyDictionary<string, Tensor> Replicated { get; }

    /// <summary>
    /// This rank's extras when the world size is unchanged; empty after resharding (per-rank state such as RNG streams
    /// has no meaning for another world; read a saving rank's with <see cref="CheckpointFolderTensors.ReadExtras"/>).
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Extras { get; }

    /// <summary>Newer checkpoints that were skipped because they were corrupt or incomplete (with fallback), and why.</summary>
    public IReadOnlyList<string> Skipped { get; }

    /// <summary>Disposes the tensors this object allocated (not those loaded into the caller's tensors).</summary>
    public void Dispose()
    {
        foreach (var t in Sharded.Values.Where(t => !borrowed.Contains(t.Name)))
        {
            t.Local.Dispose();
        }

        foreach (var t in Replicated.Values.Concat(Extras.Values))
        {
            t.Dispose();
        }
    }

    /// <summary>Loads <paramref name="folder"/> for rank <paramref name="rank"/> of <paramref name="worldSize"/> on this process alone (no collectives).</summary>
    internal static LoadedCheckpoint Read(string folder, int rank, int worldSize, CheckpointLoadOptions options, IReadOnlyList<string> skipped, IReadOnlyList<ShardedTensor>? into)
    {
        using var f = CheckpointFolder.Open(folder);
        var index = f.Index;
        if (options.ExpectedFingerprint is { } fp && fp != index.ConfigFingerprint)
        {
            throw new CheckpointException(CheckpointError.Mismatch, f.IndexPath, null, $"config fingerprint '{index.ConfigFingerprint}' is not the expected '{fp}'.");
        }

        if (options.RequireSameWorldSize && index.WorldSize != worldSize)
        {
            throw new CheckpointException(CheckpointError.Mismatch, f.IndexPath, null, $"saved by {index.WorldSize} ranks; this run has {worldSize} (resharding was not allowed).");
        }

        var targets = (into ?? []).ToDictionary(t => t.Name, StringComparer.Ordinal);
        var borrowed = targets.Keys.ToHashSet(StringComparer.Ordinal);
        var sharded = new Dictionary<string, ShardedTensor>(StringComparer.Ordinal);
        var replicated = new Dictionary<string, Tensor>();
        var extras = new Dictionary<string, Tensor>();
        try
        {
            foreach (var target in targets.Values)
            {
                if (target.Rank != rank || target.Layout.WorldSize != worldSize)
                {
                    throw new CheckpointException(CheckpointError.Mismatch, f.IndexPath, target.Name, $"target is rank {target.Rank} of {target.Layout.WorldSize}; this is rank {rank} of {worldSize}.");
                }

                f.ReadShardInto(target, options.VerifyChecksums);
                sharded[target.Name] = target;
            }

            foreach (var t in index.Tensors.Where(t => !targets.ContainsKey(t.Name)))
            {
                sharded[t.Name] = f.ReadShard(t.Name, rank, worldSize, options.VerifyChecksums);
            }

            replicated = f.ReadReplicated(options.VerifyChecksums);
            extras = index.WorldSize == worldSize ? f.ReadExtras(rank, options.VerifyChecksums) : [];
            return new LoadedCheckpoint(f.Path, index, rank, worldSize, sharded, replicated, extras, skipped, borrowed);
        }
        catch
        {
            new LoadedCheckpoint(f.Path, index, rank, worldSize, sharded, replicated, extras, skipped, borrowed).Dispose();
            throw;
        }
    }
}
