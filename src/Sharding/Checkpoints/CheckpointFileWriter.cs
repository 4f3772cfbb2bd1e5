using BnbDist.Backends.Interop;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>One tensor of a file being written: its key, dtype and shape, and what produces its bytes (in order).</summary>
internal sealed record FileEntry(string Key, ScalarType DType, long[] Shape, Action<ByteSink> Produce)
{
    public long Bytes => Shape.Aggregate(1L, (a, b) => a * b) * TensorMemory.ElementSize(DType);
}

/// <summary>Where an entry landed: absolute offset of its bytes in the file, their count and checksum.</summary>
internal sealed record WrittenEntry(string Key, long Offset, long Bytes, string Checksum);

/// <summary>A finished file: its name, size, whole-file checksum and entries.</summary>
internal sealed record WrittenFile(string Name, long Size, string Checksum, IReadOnlyDictionary<string, WrittenEntry> Entries);

/// <summary>
/// Writes a safetensors file by streaming each entry's bytes (no whole-file buffer), hashing the file and every entry as
/// the bytes pass: to a temporary name, fsynced, then renamed into place, so the final name only ever holds a whole file.
/// </summary>
internal static class CheckpointFileWriter
{
    public static WrittenFile Write(string path, IReadOnlyList<FileEntry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var ordered = entries.OrderBy(e => e.Key, StringComparer.Ordinal).ToList();
        var header = SafeTensorsFile.EncodeHeader([.. ordered.Select(e => (e.Key, e.DType, e.Shape))], metadata);
        var name = Path.GetFileName(path);
        var tmp = CheckpointPaths.TempPath(path);
        var fileHash = Checksum.Create();
        var written = new Dictionary<string, WrittenEntry>(StringComparer.Ordinal);
        long position = 0;
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                fs.Write(header);
                fileHash.Append(header);
                position = header.Length;
                foreach (var e in ordered)
                {
                    var entryHash = Checksum.Create();
                    var start = position;
                    e.Produce(chunk =>
                    {
                        fs.Write(chunk);
                        fileHash.Append(chunk);
                        entryHash.Append(chunk);
                        position += chunk.Length;
                        CheckpointFaults.Bytes(name, position);
                    });
                    if (position - start != e.Bytes)
                    {
                        throw new InvalidOperationException($"{path}: tensor '{e.Key}' produced {position - start} bytes; its dtype and shape need {e.Bytes}.");
                    }

                    written[e.Key] = new WrittenEntry(e.Key, start, e.Bytes, Checksum.Format(entryHash));
                }

                fs.Flush(true);
            }

            CheckpointFaults.Stage(name + ":written");
            DurableFiles.Commit(tmp, path);
            CheckpointFaults.Stage(name + ":renamed");
        }
        catch
        {
            DurableFiles.TryDelete(tmp);
            throw;
        }

        return new WrittenFile(name, position, Checksum.Format(fileHash), written);
    }
}
