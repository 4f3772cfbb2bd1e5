namespace BnbDist.Sharding.Checkpoints;

/// <summary>What kind of problem a <see cref="CheckpointException"/> reports.</summary>
public enum CheckpointError
{
    /// <summary>Stored bytes are not what was written: a checksum mismatch, a truncated file, an unreadable header.</summary>
    Corrupt,

    /// <summary>The checkpoint is not all there: no valid index (the save never finished), or a file the index names is missing.</summary>
    Incomplete,

    /// <summary>The index contradicts itself or the files: shapes, dtypes, offsets or slice ranges that do not add up.</summary>
    BadIndex,

    /// <summary>The checkpoint is sound but not what was asked for (another world size or config fingerprint when required).</summary>
    Mismatch,

    /// <summary>A save could not be done: the ranks passed inconsistent tensors, a rank failed, the step already exists.</summary>
    SaveFailed,
}

/// <summary>
/// A sharded checkpoint cannot be written or read as asked; the message names the file and, where one is to blame, the
/// tensor, and <see cref="Error"/> says what kind of problem it is (so callers can tell corruption from misuse).
/// </summary>
public sealed class CheckpointException : Exception
{
    /// <summary>Creates the exception for <paramref name="filePath"/> (and <paramref name="tensorName"/>, if one is to blame).</summary>
    public CheckpointException(CheckpointError error, string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Describe(error, filePath, tensorName, problem), inner)
    {
        Error = error;
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>Creates the exception.</summary>
    public CheckpointException()
        : this(CheckpointError.Corrupt, "?", null, "invalid checkpoint.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public CheckpointException(string message)
        : this(CheckpointError.Corrupt, "?", null, message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public CheckpointException(string message, Exception innerException)
        : this(CheckpointError.Corrupt, "?", null, message, innerException)
    {
    }

    /// <summary>What kind of problem this is.</summary>
    public CheckpointError Error { get; }

    /// <summary>The file (or checkpoint folder) at fault.</summary>
    public string FilePath { get; }

    /// <summary>The tensor at fault, or null when the problem is the file as a whole.</summary>
    public string? TensorName { get; }

    private static string Describe(CheckpointError error, string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{error}: {filePath}: {problem}" : $"{error}: {filePath}: tensor '{tensorName}': {problem}";
}
