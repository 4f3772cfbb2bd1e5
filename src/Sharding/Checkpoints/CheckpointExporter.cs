using System.Globalization;
using BnbDist.Serialization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Consolidates a sharded checkpoint into one plain safetensors file: every sharded tensor whole (global shape, its
/// saved bytes in order) and every replicated tensor, under their own names; per-rank extras are left out.
/// </summary>
/// <remarks>Renaming into the Hugging Face bnb-4bit key scheme is a layer above this (it needs the model's module names).</remarks>
public static class CheckpointExporter
{
    /// <summary>Writes the consolidated tensors of checkpoint <paramref name="source"/> to <paramref name="file"/> (atomically); returns how many.</summary>
    public static int Export(string source, string file, bool verify = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(file);
        using var folder = CheckpointFolder.Open(source);
        var index = folder.Index;
        var entries = new List<FileEntry>();
        foreach (var t in index.Tensors)
        {
            SafeTensorsFile.TryParseDType(t.DType, out var dtype);
            var whole = new ShardRange(0, t.Length);
            entries.Add(new FileEntry(t.Name, dtype, t.GlobalShape, sink => folder.ReadSlice(t, whole, sink, verify)));
        }

        foreach (var e in index.Replicated)
        {
            if (index.TensorRecord(e.Name) is not null)
            {
                throw new CheckpointException(CheckpointError.BadIndex, folder.IndexPath, e.Name, "is both a sharded and a replicated tensor; an export cannot hold both.");
            }

            var s = CheckpointResharder.Stored(folder, e, verify);
            entries.Add(new FileEntry(s.Name, s.DType, s.Shape, s.Produce));
        }

        CheckpointFileWriter.Write(file, entries, new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["bnbdist.step"] = index.Step.ToString(CultureInfo.InvariantCulture),
            ["bnbdist.config_fingerprint"] = index.ConfigFingerprint,
        });
        return entries.Count;
    }
}
