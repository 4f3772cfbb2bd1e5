using System.Buffers;
using System.IO.Hashing;
using BnbDist.Backends.Interop;
using BnbDist.Serialization;
using Microsoft.Win32.SafeHandles;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// A complete checkpoint folder opened for reading: its validated index, and byte-range reads of its files that check
/// each file once (present, the size the index says, a header that agrees with the index) before the first read.
/// </summary>
/// <remarks>Reads never load a whole file: a slice of any world size is assembled from the saved slices that overlap it.</remarks>
public sealed class CheckpointFolder : IDisposable
{
    private readonly Dictionary<string, SafeFileHandle> handles = new(StringComparer.Ordinal);

    private CheckpointFolder(string path, CheckpointIndex index)
    {
        Path = path;
        Index = index;
    }

    /// <summary>The folder.</summary>
    public string Path { get; }

    /// <summary>Its index.</summary>
    public CheckpointIndex Index { get; }

    /// <summary>The index file's path.</summary>
    public string IndexPath => System.IO.Path.Combine(Path, CheckpointPaths.IndexFile);

    /// <summary>Opens a checkpoint folder; no valid index → <see cref="CheckpointException"/> (<see cref="CheckpointError.Incomplete"/> or <see cref="CheckpointError.BadIndex"/>).</summary>
    public static CheckpointFolder Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return new CheckpointFolder(System.IO.Path.GetFullPath(path), CheckpointIndex.Read(path));
    }

    /// <summary>The full path of a file of the checkpoint.</summary>
    public string FilePath(string name) => System.IO.Path.Combine(Path, name);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var h in handles.Values)
        {
            h.Dispose();
        }

        handles.Clear();
    }

    /// <summary>Every (tensor name, file, offset, bytes, checksum) the index places in file <paramref name="file"/>, by offset.</summary>
    internal List<(string Tensor, string Key, string DType, long Elements, long Offset, long Bytes, string Checksum)> EntriesIn(string file) =>
        [.. Index.Tensors.SelectMany(t => t.Slices.Where(s => s.File == file).Select(s => (t.Name, s.Key, t.DType, s.Length, s.Offset, s.Bytes, s.Checksum)))
            .Concat(Index.Replicated.Concat(Index.Extras).Where(e => e.File == file)
                .Select(e => (e.Name, e.Key, e.DType, e.Shape.Aggregate(1L, (a, b) => a * b), e.Offset, e.Bytes, e.Checksum)))
            .OrderBy(e => e.Item5)];

    /// <summary>
    /// Opens <paramref name="file"/> (once) after checking it: present (else <see cref="CheckpointError.Incomplete"/>), the
    /// indexed size (else <see cref="CheckpointError.Corrupt"/>, naming the first tensor cut off), a valid safetensors
    /// header (else Corrupt) that places every indexed tensor where the index says (else <see cref="CheckpointError.BadIndex"/>).
    /// </summary>
    internal SafeFileHandle Handle(string file)
    {
        if (handles.TryGetValue(file, out var open))
        {
            return open;
        }

        var record = Index.FileRecord(file) ?? throw new CheckpointException(CheckpointError.BadIndex, IndexPath, null, $"file '{file}' is not listed.");
        var path = FilePath(file);
        if (!File.Exists(path))
        {
            throw new CheckpointException(CheckpointError.Incomplete, path, null, "missing: the index lists this file but it is not there.");
        }

        var entries = EntriesIn(file);
        var size = new FileInfo(path).Length;
        if (size != record.Size)
        {
            var cut = entries.FirstOrDefault(e => e.Offset + e.Bytes > size);
            throw new CheckpointException(CheckpointError.Corrupt, path, cut.Tensor,
                size < record.Size ? $"truncated: {size} bytes, the index says {record.Size}." : $"{size} bytes, the index says {record.Size} (trailing bytes).");
        }

        SafeTensorsFile header;
        try
        {
            header = SafeTensorsFile.Open(path);
        }
        catch (SafeTensorsFormatException ex)
        {
            throw new CheckpointException(CheckpointError.Corrupt, path, null, $"unreadable safetensors header: {ex.Message}", ex);
        }

        foreach (var e in entries)
        {
            if (!header.Contains(e.Key))
            {
                throw new CheckpointException(CheckpointError.BadIndex, IndexPath, e.Tensor, $"'{file}' has no tensor '{e.Key}'.");
            }

            var info = header.Info(e.Key);
            if (SafeTensorsFile.DTypeString(info.DType) != e.DType || info.NumElements != e.Elements || header.DataStart + info.Begin != e.Offset)
            {
                throw new CheckpointException(CheckpointError.BadIndex, IndexPath, e.Tensor,
                    $"the index says {e.DType} × {e.Elements} at byte {e.Offset} of '{file}'; its header says {SafeTensorsFile.DTypeString(info.DType)} × {info.NumElements} at byte {header.DataStart + info.Begin}.");
            }
        }

        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        handles[file] = handle;
        return handle;
    }

    /// <summary>
    /// Streams bytes [<paramref name="offset"/>, +<paramref name="count"/>) of <paramref name="file"/>, handing the part
    /// [<paramref name="keepFrom"/>, <paramref name="keepTo"/>) (absolute offsets) to <paramref name="sink"/> and everything to <paramref name="hash"/>.
    /// </summary>
    internal void Stream(string file, string tensor, long offset, long count, long keepFrom, long keepTo, ByteSink? sink, XxHash3? hash)
    {
        var handle = Handle(file);
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(TensorBytes.ChunkBytes, Math.Max(1, count)));
        try
        {
            for (long pos = offset; pos < offset + count;)
            {
                var want = (int)Math.Min(buffer.Length, offset + count - pos);
                var got = RandomAccess.Read(handle, buffer.AsSpan(0, want), pos);
                if (got <= 0)
                {
                    throw new CheckpointException(CheckpointError.Corrupt, FilePath(file), tensor, $"truncated while reading: no bytes at offset {pos}.");
                }

                var chunk = buffer.AsSpan(0, got);
                hash?.Append(chunk);
                var from = Math.Max(pos, keepFrom);
                var to = Math.Min(pos + got, keepTo);
                if (sink is not null && to > from)
                {
                    sink(chunk[(int)(from - pos)..(int)(to - pos)]);
                }

                pos += got;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Streams a whole stored entry (checked against its checksum when <paramref name="verify"/>).</summary>
    internal void ReadStored(StoredTensorRecord e, ByteSink sink, bool verify) =>
        ReadChecked(e.File, e.Name, e.Offset, e.Bytes, e.Checksum, e.Offset, e.Offset + e.Bytes, sink, verify);

    /// <summary>
    /// Streams elements <paramref name="range"/> of sharded tensor <paramref name="t"/> from the saved slices that overlap
    /// it. With <paramref name="verify"/>, each overlapping slice is read whole to check its checksum (only its overlap is
    /// passed on); without, only the overlapping bytes are read.
    /// </summary>
    internal void ReadSlice(ShardedTensorRecord t, ShardRange range, ByteSink sink, bool verify)
    {
        SafeTensorsFile.TryParseDType(t.DType, out var dtype);
        var size = TensorMemory.ElementSize(dtype);
        foreach (var s in t.Slices)
        {
            var from = Math.Max(s.Start, range.Start);
            var to = Math.Min(s.Start + s.Length, range.End);
            if (to <= from)
            {
                continue;
            }

            var keepFrom = s.Offset + ((from - s.Start) * size);
            var keepTo = s.Offset + ((to - s.Start) * size);
            if (verify)
            {
                ReadChecked(s.File, t.Name, s.Offset, s.Bytes, s.Checksum, keepFrom, keepTo, sink, verify: true);
            }
            else
            {
                Stream(s.File, t.Name, keepFrom, keepTo - keepFrom, keepFrom, keepTo, sink, null);
            }
        }
    }

    private void ReadChecked(string file, string tensor, long offset, long bytes, string checksum, long keepFrom, long keepTo, ByteSink sink, bool verify)
    {
        var hash = verify ? Checksum.Create() : null;
        Stream(file, tensor, offset, bytes, keepFrom, keepTo, sink, hash);
        if (hash is not null && Checksum.Format(hash) != checksum)
        {
            throw new CheckpointException(CheckpointError.Corrupt, FilePath(file), tensor,
                $"checksum mismatch in bytes [{offset}, {offset + bytes}): {Checksum.Format(hash)}, the index says {checksum}.");
        }
    }
}
