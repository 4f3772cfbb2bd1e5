using BnbDist.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>Reads a checkpoint's tensors into new CPU tensors: any rank's slice for any world size, whole tensors, replicated tensors, extras.</summary>
public static class CheckpointFolderTensors
{
    /// <summary>
    /// Rank <paramref name="rank"/>'s slice of sharded tensor <paramref name="name"/> in a world of <paramref name="worldSize"/>
    /// ranks (same atoms, new world size): the bytes of the saved slices, moved, never re-quantized.
    /// </summary>
    public static ShardedTensor ReadShard(this CheckpointFolder folder, string name, int rank, int worldSize, bool verify = true)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var t = folder.Index.TensorRecord(name) ?? throw new KeyNotFoundException($"{folder.IndexPath}: no sharded tensor named '{name}'.");
        var layout = new ShardLayout(t.Atoms, worldSize);
        var range = layout.Slice(rank, t.Length, t.UnitsPerAtom);
        var local = Fill(new[] { range.Length }, t.DType, sink => folder.ReadSlice(t, range, sink, verify), folder.FilePath(t.Slices[0].File), name);
        return new ShardedTensor(name, local, [.. t.GlobalShape], layout, t.UnitsPerAtom, rank);
    }

    /// <summary>
    /// Fills <paramref name="target"/>'s local slice in place (any device; a CPU contiguous slice is read into directly,
    /// without a host copy) with its rank's bytes of the saved tensor of the same name, laid out for the target's world size.
    /// </summary>
    /// <exception cref="CheckpointException"><see cref="CheckpointError.Mismatch"/>: no such tensor, or another dtype, global shape or atom size.</exception>
    public static void ReadShardInto(this CheckpointFolder folder, ShardedTensor target, bool verify = true)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(target);
        var t = folder.Index.TensorRecord(target.Name)
            ?? throw new CheckpointException(CheckpointError.Mismatch, folder.IndexPath, target.Name, "the checkpoint has no such sharded tensor.");
        if (t.DType != SafeTensorsFile.DTypeString(target.Local.dtype) || !t.GlobalShape.SequenceEqual(target.GlobalShape)
            || t.UnitsPerAtom != target.UnitsPerAtom || t.Atoms != target.Layout.Atoms || target.Local.numel() != target.Range.Length)
        {
            throw new CheckpointException(CheckpointError.Mismatch, folder.IndexPath, target.Name,
                $"saved as {t.DType} [{string.Join(", ", t.GlobalShape)}] in {t.Atoms} atoms of {t.UnitsPerAtom}; the target is " +
                $"{SafeTensorsFile.DTypeString(target.Local.dtype)} [{string.Join(", ", target.GlobalShape)}] in {target.Layout.Atoms} atoms of {target.UnitsPerAtom} with {target.Local.numel()} local elements.");
        }

        using var noGrad = no_grad();
        if (target.Local.device_type == DeviceType.CPU && target.Local.is_contiguous())
        {
            Fill(target.Local, sink => folder.ReadSlice(t, target.Range, sink, verify), folder.FilePath(t.Slices[0].File), t.Name);
            return;
        }

        using var host = folder.ReadShard(target.Name, target.Rank, target.Layout.WorldSize, verify).Local;
        target.Local.copy_(host);
    }

    /// <summary>The whole of sharded tensor <paramref name="name"/>, in its global shape.</summary>
    public static Tensor ReadFull(this CheckpointFolder folder, string name, bool verify = true)
    {
        var shard = folder.ReadShard(name, 0, 1, verify);
        using var flat = shard.Local;
        return flat.reshape(shard.GlobalShape).contiguous();
    }

    /// <summary>Every replicated tensor.</summary>
    public static Dictionary<string, Tensor> ReadReplicated(this CheckpointFolder folder, bool verify = true)
    {
        ArgumentNullException.ThrowIfNull(folder);
        return ReadStored(folder, folder.Index.Replicated, verify);
    }

    /// <summary>The extras saved by rank <paramref name="rank"/> of the saving world.</summary>
    public static Dictionary<string, Tensor> ReadExtras(this CheckpointFolder folder, int rank, bool verify = true)
    {
        ArgumentNullException.ThrowIfNull(folder);
        return ReadStored(folder, [.. folder.Index.Extras.Where(e => e.Rank == rank)], verify);
    }

    private static Dictionary<string, Tensor> ReadStored(CheckpointFolder folder, IEnumerable<StoredTensorRecord> records, bool verify)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var e in records)
            {
                result[e.Name] = Fill(e.Shape, e.DType, sink => folder.ReadStored(e, sink, verify), folder.FilePath(e.File), e.Name);
            }
        }
        catch
        {
            foreach (var t in result.Values)
            {
                t.Dispose();
            }

            throw;
        }

        return result;
    }

    private static Tensor Fill(long[] shape, string dtype, Action<ByteSink> read, string file, string name)
    {
        SafeTensorsFile.TryParseDType(dtype, out var st);
        var t = empty(shape, st);
        try
        {
            Fill(t, read, file, name);
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    private static void Fill(Tensor t, Action<ByteSink> read, string file, string name)
    {
        var filler = new TensorBytes.Filler(t);
        read(filler.Write);
        if (filler.Filled != TensorBytes.ByteLength(t))
        {
            throw new CheckpointException(CheckpointError.Corrupt, file, name, $"{filler.Filled} of {TensorBytes.ByteLength(t)} bytes read.");
        }
    }
}
