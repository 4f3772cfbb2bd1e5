using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using BnbDist.Nn.Checkpoints;
using BnbDist.Serialization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// The tensors of a Hugging Face safetensors model folder (<c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>) or of one file, by key, read on demand: whole tensors, or their bytes streamed.
/// Every problem is a <see cref="CheckpointException"/> naming the file and key.
/// </summary>
internal sealed class HfModelFiles
{
    private readonly Dictionary<string, SafeTensorsFile> byKey = new(StringComparer.Ordinal);
    private readonly string origin;

    private HfModelFiles(string origin)
    {
        this.origin = origin;
    }

    /// <summary>Every key, ordinal order.</summary>
    public IEnumerable<string> Keys => byKey.Keys.Order(StringComparer.Ordinal);

    /// <summary>Opens a model folder (single file or sharded index).</summary>
    public static HfModelFiles OpenModel(string directory)
    {
        var files = new HfModelFiles(directory);
        var indexPath = Path.Combine(directory, HfCheckpoint.IndexFile);
        if (!File.Exists(indexPath))
        {
            files.Add(Path.Combine(directory, HfCheckpoint.SingleFile), null);
            return files;
        }

        JsonObject? map;
        try
        {
            map = JsonNode.Parse(File.ReadAllText(indexPath))?["weight_map"] as JsonObject;
        }
        catch (JsonException ex)
        {
            throw new CheckpointException(CheckpointError.Corrupt, indexPath, null, $"not valid JSON: {ex.Message}", ex);
        }

        if (map is null)
        {
            throw new CheckpointException(CheckpointError.Corrupt, indexPath, null, "no \"weight_map\" object.");
        }

        foreach (var group in map.GroupBy(kv => kv.Value?.GetValueKind() == JsonValueKind.String ? (string)kv.Value! : string.Empty))
        {
            files.Add(Path.Combine(directory, Path.GetFileName(group.Key)), [.. group.Select(kv => kv.Key)]);
        }

        return files;
    }

    /// <summary>Opens one safetensors file (e.g. a peft adapter).</summary>
    public static HfModelFiles OpenFile(string path)
    {
        var files = new HfModelFiles(path);
        files.Add(path, null);
        return files;
    }

    public bool Contains(string key) => byKey.ContainsKey(key);

    /// <summary>The file holding <paramref name="key"/> (for error messages).</summary>
    public string FileOf(string key) => byKey.TryGetValue(key, out var f) ? f.Path : origin;

    public SafeTensorInfo Info(string key) => FileFor(key).Info(key);

    /// <summary>The tensor's bytes (for small tensors).</summary>
    public byte[] ReadBytes(string key)
    {
        var info = Info(key);
        var bytes = new byte[info.End - info.Begin];
        var at = 0;
        Stream(key, 0, bytes.Length, chunk =>
        {
            chunk.CopyTo(bytes.AsSpan(at));
            at += chunk.Length;
        });
        return bytes;
    }

    /// <summary>Streams bytes [<paramref name="from"/>, <paramref name="to"/>) of the tensor's data to <paramref name="sink"/>.</summary>
    public void Stream(string key, long from, long to, ByteSink sink)
    {
        var file = FileFor(key);
        var info = file.Info(key);
        using var handle = System.IO.File.OpenHandle(file.Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(TensorBytes.ChunkBytes, Math.Max(1, to - from)));
        try
        {
            for (var pos = from; pos < to;)
            {
                var got = RandomAccess.Read(handle, buffer.AsSpan(0, (int)Math.Min(buffer.Length, to - pos)), file.DataStart + info.Begin + pos);
                if (got <= 0)
                {
                    throw new CheckpointException(CheckpointError.Corrupt, file.Path, key, $"truncated: no bytes at data offset {info.Begin + pos}.");
                }

                sink(buffer.AsSpan(0, got));
                pos += got;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private SafeTensorsFile FileFor(string key) =>
        byKey.TryGetValue(key, out var f) ? f : throw new CheckpointException(CheckpointError.Incomplete, origin, key, "missing.");

    private void Add(string path, IReadOnlyList<string>? keys)
    {
        if (!System.IO.File.Exists(path))
        {
            throw new CheckpointException(CheckpointError.Incomplete, path, keys?.FirstOrDefault(), "missing.");
        }

        SafeTensorsFile file;
        try
        {
            file = SafeTensorsFile.Open(path);
        }
        catch (SafeTensorsFormatException ex)
        {
            throw new CheckpointException(CheckpointError.Corrupt, path, null, $"unreadable safetensors file: {ex.Message}", ex);
        }

        var length = new FileInfo(path).Length;
        foreach (var key in keys ?? [.. file.Names])
        {
            if (!file.Contains(key))
            {
                throw new CheckpointException(CheckpointError.BadIndex, path, key, $"the {HfCheckpoint.IndexFile} places it in this file, which does not hold it.");
            }

            if (file.DataStart + file.Info(key).End > length)
            {
                throw new CheckpointException(CheckpointError.Corrupt, path, key, $"truncated: the file has {length} bytes.");
            }

            byKey[key] = file;
        }
    }
}
