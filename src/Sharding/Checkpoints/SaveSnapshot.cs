using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// A rank's <see cref="CheckpointState"/> checked and turned into byte sources. A synchronous save streams straight from
/// the caller's tensors (one host copy at a time for GPU tensors); an async save first copies everything into host
/// buffers (<c>pool</c>), so training may change its tensors while the files are written.
/// </summary>
internal sealed class SaveSnapshot
{
    private SaveSnapshot()
    {
    }

    public List<ShardSource> Shards { get; } = [];

    public List<StoredSource> Replicated { get; } = [];

    public List<StoredSource> Extras { get; } = [];

    /// <summary>Bytes of this rank's tensors (slices, replicated, extras).</summary>
    public long Bytes { get; private set; }

    public static SaveSnapshot Take(CheckpointState state, int rank, int worldSize, HostBufferPool? pool, string folder)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(state.Sharded);
        var snap = new SaveSnapshot();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var st in state.Sharded)
        {
            CheckName(st.Name, names, folder, "sharded");
            if (st.Name.StartsWith(RankFileWriter.ExtraPrefix, StringComparison.Ordinal))
            {
                throw Bad(folder, st.Name, $"sharded tensor names may not start with '{RankFileWriter.ExtraPrefix}'.");
            }

            if (st.Rank != rank || st.Layout.WorldSize != worldSize)
            {
                throw Bad(folder, st.Name, $"is rank {st.Rank}'s slice of a {st.Layout.WorldSize}-rank layout; this is rank {rank} of {worldSize}.");
            }

            ShardRange range;
            try
            {
                range = st.Range;
            }
            catch (ArgumentException ex)
            {
                throw Bad(folder, st.Name, $"global shape [{string.Join(", ", st.GlobalShape)}] does not fit its layout ({st.Layout}, {st.UnitsPerAtom} per atom): {ex.Message}");
            }

            if (st.Local.numel() != range.Length)
            {
                throw Bad(folder, st.Name, $"local slice has {st.Local.numel()} elements; rank {rank}'s slice of {st.Layout} is {range.Length}.");
            }

            var local = snap.Source(st.Local, pool, folder, "sharded/" + st.Name);
            snap.Shards.Add(new ShardSource(st.Name, st.Local.dtype, [.. st.GlobalShape], st.Layout.Atoms, st.UnitsPerAtom, range, local));
        }

        snap.Replicated.AddRange(snap.Stored(state.Replicated, pool, folder, "replicated"));
        snap.Extras.AddRange(snap.Stored(state.Extras, pool, folder, "extra"));
        return snap;
    }

    private static CheckpointException Bad(string folder, string? name, string problem) => new(CheckpointError.SaveFailed, folder, name, problem);

    private static void CheckName(string name, HashSet<string> names, string folder, string kind)
    {
        if (string.IsNullOrEmpty(name) || name == "__metadata__" || !names.Add(name))
        {
            throw Bad(folder, name, $"{kind} tensor names must be unique, non-empty and not '__metadata__'.");
        }
    }

    private List<StoredSource> Stored(IReadOnlyDictionary<string, Tensor>? tensors, HostBufferPool? pool, string folder, string kind)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<StoredSource>();
        foreach (var (name, t) in tensors ?? new Dictionary<string, Tensor>())
        {
            CheckName(name, names, folder, kind);
            result.Add(new StoredSource(name, t.dtype, t.shape, Source(t, pool, folder, $"{kind}/{name}")));
        }

        return result;
    }

    private Action<ByteSink> Source(Tensor t, HostBufferPool? pool, string folder, string key)
    {
        var name = key[(key.IndexOf('/', StringComparison.Ordinal) + 1)..];
        try
        {
            _ = SafeTensorsFile.DTypeString(t.dtype);
        }
        catch (ArgumentException ex)
        {
            throw Bad(folder, name, ex.Message);
        }

        Bytes += TensorBytes.ByteLength(t);
        if (pool is null)
        {
            return sink => TensorBytes.WriteTo(t, sink);
        }

        var copy = pool.CopyIn(key, t);
        return sink => TensorBytes.WriteTo(copy, sink);
    }
}
