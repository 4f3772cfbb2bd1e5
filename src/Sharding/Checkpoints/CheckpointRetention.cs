namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Rank 0's folder housekeeping: preparing a step folder before a save, and after a commit keeping only the newest
/// complete checkpoints. A checkpoint is always deleted index first, so an interrupted deletion leaves an incomplete
/// folder (ignored), never one whose index promises missing files.
/// </summary>
internal static class CheckpointRetention
{
    /// <summary>
    /// Makes <c>ROOT/step-K</c> ready for a save: leftovers of an unfinished save of the same step are removed; a complete
    /// checkpoint of that step is a <see cref="CheckpointError.SaveFailed"/> unless <paramref name="overwrite"/>.
    /// </summary>
    public static string Prepare(string root, long step, bool overwrite)
    {
        var folder = CheckpointPaths.StepFolder(root, step);
        if (Directory.Exists(folder))
        {
            if (File.Exists(Path.Combine(folder, CheckpointPaths.IndexFile)) && !overwrite)
            {
                throw new CheckpointException(CheckpointError.SaveFailed, folder, null, "a checkpoint of this step exists (pass Overwrite to replace it).");
            }

            Delete(folder);
        }

        Directory.CreateDirectory(folder);
        DurableFiles.SyncFolder(root);
        return folder;
    }

    /// <summary>
    /// Deletes complete checkpoints beyond the newest <paramref name="keepLast"/> (never <paramref name="justSaved"/>),
    /// and unfinished folders of older steps than <paramref name="justSaved"/> (leftovers of crashed saves).
    /// </summary>
    public static void Retain(string root, int keepLast, long justSaved)
    {
        var all = CheckpointCatalog.List(root);
        var keep = keepLast <= 0
            ? all.Where(c => c.IsComplete).Select(c => c.Step).ToHashSet()
            : all.Where(c => c.IsComplete).OrderByDescending(c => c.Step).Take(keepLast).Select(c => c.Step).Append(justSaved).ToHashSet();
        foreach (var c in all.Where(c => !keep.Contains(c.Step) && (c.IsComplete || c.Step < justSaved)))
        {
            CheckpointFaults.Stage($"retention:{c.Step}");
            Delete(c.Path);
        }
    }

    /// <summary>Deletes a checkpoint folder: index first (made durable), then everything else.</summary>
    public static void Delete(string folder)
    {
        var index = Path.Combine(folder, CheckpointPaths.IndexFile);
        if (File.Exists(index))
        {
            File.Delete(index);
            DurableFiles.SyncFolder(folder);
            CheckpointFaults.Stage("delete:index-removed");
        }

        Directory.Delete(folder, recursive: true);
    }
}
