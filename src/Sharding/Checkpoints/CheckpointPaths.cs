using System.Globalization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>File and folder names of sharded checkpoints: <c>ROOT/step-K/{rank-R-of-N.safetensors, replicated.safetensors, index.json}</c> and <c>ROOT/latest</c>.</summary>
public static class CheckpointPaths
{
    /// <summary>The index, written last: a folder without a valid one is not a checkpoint.</summary>
    public const string IndexFile = "index.json";

    /// <summary>The tensors every rank holds identically (written by rank 0).</summary>
    public const string ReplicatedFile = "replicated.safetensors";

    /// <summary>The pointer file under the root naming the newest committed step folder.</summary>
    public const string LatestFile = "latest";

    private const string StepPrefix = "step-";

    /// <summary>The file of rank <paramref name="rank"/> of <paramref name="worldSize"/>.</summary>
    public static string RankFile(int rank, int worldSize) => $"rank-{rank}-of-{worldSize}.safetensors";

    /// <summary>The folder name of step <paramref name="step"/>.</summary>
    public static string StepFolderName(long step) => StepPrefix + step.ToString(CultureInfo.InvariantCulture);

    /// <summary>The folder of step <paramref name="step"/> under <paramref name="root"/>.</summary>
    public static string StepFolder(string root, long step) => Path.Combine(root, StepFolderName(step));

    /// <summary>The step of a folder named <c>step-K</c>, or null for any other name.</summary>
    public static long? ParseStepFolder(string folderName) =>
        folderName.StartsWith(StepPrefix, StringComparison.Ordinal)
        && long.TryParse(folderName.AsSpan(StepPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var step)
            ? step
            : null;

    /// <summary>A temporary name beside <paramref name="path"/> (dot-prefixed, unique), renamed into place once complete.</summary>
    internal static string TempPath(string path) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
}
