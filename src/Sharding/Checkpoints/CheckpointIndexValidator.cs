using BnbDist.Backends.Interop;
using BnbDist.Serialization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Checks that an index adds up on its own: every slice is exactly the <see cref="ShardLayout"/> slice of its rank, sizes
/// match dtypes and shapes, every byte range lies inside a listed file. What it cannot see (the files' own headers) is
/// cross-checked when a file is opened (<see cref="CheckpointFolder"/>).
/// </summary>
internal static class CheckpointIndexValidator
{
    public static void Validate(CheckpointIndex index, string path)
    {
        void Fail(string? tensor, string problem) => throw new CheckpointException(CheckpointError.BadIndex, path, tensor, problem);

        if (index.Format != CheckpointIndex.FormatName || index.FormatVersion != CheckpointIndex.CurrentVersion)
        {
            Fail(null, $"format '{index.Format}' version {index.FormatVersion} is not {CheckpointIndex.FormatName} version {CheckpointIndex.CurrentVersion}.");
        }

        if (index.WorldSize < 1)
        {
            Fail(null, $"world_size {index.WorldSize} is not positive.");
        }

        if (index.ChecksumAlgorithm != Checksum.Algorithm)
        {
            Fail(null, $"checksum algorithm '{index.ChecksumAlgorithm}' is not {Checksum.Algorithm}.");
        }

        var files = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var f in index.Files)
        {
            if (f.Name.Length == 0 || f.Name != Path.GetFileName(f.Name) || f.Name is "." or ".." || f.Size < 8 || !files.TryAdd(f.Name, f.Size))
            {
                Fail(null, $"file entry '{f.Name}' (size {f.Size}) is not a unique plain file name of at least 8 bytes.");
            }
        }

        void CheckRange(string tensor, string file, long offset, long bytes, string dtype, long elements)
        {
            if (!SafeTensorsFile.TryParseDType(dtype, out var st))
            {
                Fail(tensor, $"unsupported dtype '{dtype}'.");
            }

            if (bytes != elements * TensorMemory.ElementSize(st))
            {
                Fail(tensor, $"{bytes} bytes do not hold {elements} elements of {dtype}.");
            }

            if (!files.TryGetValue(file, out var size))
            {
                Fail(tensor, $"its file '{file}' is not listed among the checkpoint's files.");
            }

            if (offset < 8 || offset + bytes > size)
            {
                Fail(tensor, $"bytes [{offset}, {offset + bytes}) lie outside '{file}' ({size} bytes).");
            }
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in index.Tensors)
        {
            if (!names.Add(t.Name))
            {
                Fail(t.Name, "listed twice.");
            }

            if (t.GlobalShape.Any(d => d < 0) || t.UnitsPerAtom < 1 || t.Atoms != ShardLayout.ForLength(t.Length, t.UnitsPerAtom, 1).Atoms)
            {
                Fail(t.Name, $"global shape [{string.Join(", ", t.GlobalShape)}] with {t.UnitsPerAtom} units per atom does not make {t.Atoms} atoms.");
            }

            var layout = new ShardLayout(t.Atoms, index.WorldSize);
            if (t.Slices.Count != index.WorldSize)
            {
                Fail(t.Name, $"{t.Slices.Count} slices for world size {index.WorldSize}.");
            }

            for (var r = 0; r < t.Slices.Count; r++)
            {
                var s = t.Slices[r];
                var expected = layout.Slice(r, t.Length, t.UnitsPerAtom);
                if (s.Rank != r || s.Start != expected.Start || s.Length != expected.Length)
                {
                    Fail(t.Name, $"slice {r} (rank {s.Rank}, elements [{s.Start}, {s.Start + s.Length})) is not rank {r}'s slice [{expected.Start}, {expected.End}) of {layout}.");
                }

                CheckRange(t.Name, s.File, s.Offset, s.Bytes, t.DType, s.Length);
            }
        }

        foreach (var group in new[] { index.Replicated, index.Extras })
        {
            var seen = new HashSet<(int, string)>();
            foreach (var e in group)
            {
                if (e.Rank < 0 || e.Rank >= index.WorldSize || !seen.Add((e.Rank, e.Name)) || e.Shape.Any(d => d < 0))
                {
                    Fail(e.Name, $"rank {e.Rank} or shape [{string.Join(", ", e.Shape)}] invalid, or listed twice.");
                }

                CheckRange(e.Name, e.File, e.Offset, e.Bytes, e.DType, e.Shape.Aggregate(1L, (a, b) => a * b));
            }
        }
    }
}
