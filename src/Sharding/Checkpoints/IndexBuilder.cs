using System.Globalization;
using System.Reflection;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Rank 0's half of the commit: every rank's manifest into one index, after checking the ranks agree (same tensor
/// names, dtypes, global shapes and layouts; the same replicated tensors, by checksum).
/// </summary>
internal static class IndexBuilder
{
    /// <summary>This library's version as recorded in indexes.</summary>
    public static string LibraryVersion { get; } =
        typeof(IndexBuilder).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public static CheckpointIndex Build(IReadOnlyList<RankManifest> manifests, long step, int worldSize, string fingerprint, string folder, int? reshardedFrom = null)
    {
        CheckpointException Fail(string? tensor, string problem) => new(CheckpointError.SaveFailed, folder, tensor, problem);

        var byRank = manifests.OrderBy(m => m.Rank).ToList();
        if (byRank.Count != worldSize || byRank.Where((m, i) => m.Rank != i).Any())
        {
            throw Fail(null, $"expected manifests of ranks 0..{worldSize - 1}; got ranks {string.Join(", ", byRank.Select(m => m.Rank))}.");
        }

        var zero = byRank[0];
        var tensors = zero.Tensors.ToDictionary(t => t.Name, t => t, StringComparer.Ordinal);
        var slices = zero.Tensors.ToDictionary(t => t.Name, t => new List<SliceRecord>(t.Slices), StringComparer.Ordinal);
        var replicated = zero.Replicated.ToDictionary(t => t.Name, t => t, StringComparer.Ordinal);
        foreach (var m in byRank.Skip(1))
        {
            foreach (var t in m.Tensors)
            {
                if (!tensors.TryGetValue(t.Name, out var t0))
                {
                    throw Fail(t.Name, $"rank {m.Rank} saved it but rank 0 did not.");
                }

                if (t.DType != t0.DType || !t.GlobalShape.SequenceEqual(t0.GlobalShape) || t.UnitsPerAtom != t0.UnitsPerAtom || t.Atoms != t0.Atoms)
                {
                    throw Fail(t.Name, $"rank {m.Rank} has {Describe(t)}, rank 0 has {Describe(t0)}.");
                }

                slices[t.Name].AddRange(t.Slices);
            }

            if (m.Tensors.Count != tensors.Count)
            {
                var missing = tensors.Keys.Except(m.Tensors.Select(t => t.Name)).First();
                throw Fail(missing, $"rank {m.Rank} did not save it.");
            }

            foreach (var r in m.Replicated)
            {
                if (!replicated.TryGetValue(r.Name, out var r0) || r0.Checksum != r.Checksum || r0.DType != r.DType || !r0.Shape.SequenceEqual(r.Shape))
                {
                    throw Fail(r.Name, $"replicated tensor differs between rank {m.Rank} and rank 0 (or only one of them has it).");
                }
            }

            if (m.Replicated.Count != replicated.Count)
            {
                throw Fail(replicated.Keys.Except(m.Replicated.Select(r => r.Name)).First(), $"replicated tensor missing on rank {m.Rank}.");
            }
        }

        var index = new CheckpointIndex
        {
            Format = CheckpointIndex.FormatName,
            FormatVersion = CheckpointIndex.CurrentVersion,
            Step = step,
            WorldSize = worldSize,
            LibraryVersion = LibraryVersion,
            ConfigFingerprint = fingerprint,
            CreatedUtc = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture),
            ChecksumAlgorithm = Checksum.Algorithm,
            ReshardedFromWorldSize = reshardedFrom,
            Files = [.. byRank.SelectMany(m => m.Files).OrderBy(f => f.Name, StringComparer.Ordinal)],
            Tensors = [.. tensors.Values.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => t with { Slices = [.. slices[t.Name].OrderBy(s => s.Rank)] })],
            Replicated = [.. replicated.Values.OrderBy(r => r.Name, StringComparer.Ordinal)],
            Extras = [.. byRank.SelectMany(m => m.Extras.OrderBy(e => e.Name, StringComparer.Ordinal))],
        };
        CheckpointIndexValidator.Validate(index, Path.Combine(folder, CheckpointPaths.IndexFile));
        return index;
    }

    private static string Describe(ShardedTensorRecord t) =>
        $"{t.DType} [{string.Join(", ", t.GlobalShape)}] in {t.Atoms} atoms of {t.UnitsPerAtom}";
}
