namespace BnbDist.Sharding.Checkpoints;

/// <summary>A <c>step-K</c> folder under a checkpoint root, and whether it is a checkpoint (has a valid index).</summary>
/// <param name="Step">K.</param>
/// <param name="Path">The folder.</param>
/// <param name="Index">Its index, or null if it has none or an invalid one (an unfinished save: ignored by loads).</param>
/// <param name="Problem">Why it is incomplete, or null.</param>
public sealed record CheckpointInfo(long Step, string Path, CheckpointIndex? Index, string? Problem)
{
    /// <summary>Whether it has a valid index (its files' checksums are not read; <see cref="CheckpointVerifier"/> does that).</summary>
    public bool IsComplete => Index is not null;
}

/// <summary>The checkpoints under a root folder (<c>ROOT/step-K</c>, <c>ROOT/latest</c>).</summary>
public static class CheckpointCatalog
{
    /// <summary>Every <c>step-K</c> folder under <paramref name="root"/>, by step, complete or not.</summary>
    public static IReadOnlyList<CheckpointInfo> List(string root)
    {
        ArgumentNullException.ThrowIfNull(root);
        if (!Directory.Exists(root))
        {
            return [];
        }

        var result = new List<CheckpointInfo>();
        foreach (var dir in Directory.GetDirectories(root))
        {
            if (CheckpointPaths.ParseStepFolder(Path.GetFileName(dir)) is not { } step)
            {
                continue;
            }

            try
            {
                result.Add(new CheckpointInfo(step, dir, CheckpointIndex.Read(dir), null));
            }
            catch (CheckpointException ex)
            {
                result.Add(new CheckpointInfo(step, dir, null, ex.Message));
            }
        }

        return [.. result.OrderBy(c => c.Step)];
    }

    /// <summary>The step the <c>latest</c> pointer names, or null if there is none (or it is unreadable).</summary>
    public static long? LatestPointer(string root)
    {
        var path = Path.Combine(root, CheckpointPaths.LatestFile);
        try
        {
            return File.Exists(path) ? CheckpointPaths.ParseStepFolder(File.ReadAllText(path).Trim()) : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// The steps a load tries, in order: the one <c>latest</c> names (if its folder has an index, valid or not: the pointer
    /// only ever names committed checkpoints, so a bad index there is damage to report, not a save in progress), then the
    /// other complete checkpoints by descending step. Folders that never got an index are not checkpoints and never tried.
    /// </summary>
    public static IReadOnlyList<long> LoadOrder(string root)
    {
        var all = List(root);
        var pointer = LatestPointer(root);
        var first = all.Where(c => c.Step == pointer && File.Exists(Path.Combine(c.Path, CheckpointPaths.IndexFile))).Select(c => c.Step);
        return [.. first, .. all.Where(c => c.IsComplete && c.Step != pointer).OrderByDescending(c => c.Step).Select(c => c.Step)];
    }

    /// <summary>Points <c>latest</c> at step <paramref name="step"/> (atomic replace).</summary>
    internal static void WriteLatest(string root, long step) =>
        DurableFiles.WriteAllText(Path.Combine(root, CheckpointPaths.LatestFile), CheckpointPaths.StepFolderName(step) + "\n", CheckpointPaths.LatestFile);
}
