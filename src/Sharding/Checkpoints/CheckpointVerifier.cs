namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Reads every byte of a checkpoint and checks it against the index: each file present with its size, header and
/// whole-file checksum, each tensor entry with its own checksum (so a flipped byte is reported with its tensor).
/// </summary>
public static class CheckpointVerifier
{
    /// <summary>Every problem found in checkpoint folder <paramref name="folder"/> (empty: it is sound).</summary>
    public static IReadOnlyList<CheckpointException> Verify(string folder)
    {
        CheckpointFolder f;
        try
        {
            f = CheckpointFolder.Open(folder);
        }
        catch (CheckpointException ex)
        {
            return [ex];
        }

        using (f)
        {
            var problems = new List<CheckpointException>();
            foreach (var file in f.Index.Files)
            {
                try
                {
                    problems.AddRange(VerifyFile(f, file));
                }
                catch (CheckpointException ex)
                {
                    problems.Add(ex);
                }
            }

            return problems;
        }
    }

    /// <summary>Throws the first problem of <see cref="Verify"/>, if any.</summary>
    public static void ThrowIfInvalid(string folder)
    {
        if (Verify(folder) is [var first, ..])
        {
            throw first;
        }
    }

    private static List<CheckpointException> VerifyFile(CheckpointFolder f, CheckpointFileRecord file)
    {
        var problems = new List<CheckpointException>();
        var path = f.FilePath(file.Name);
        var fileHash = Checksum.Create();
        long pos = 0;
        foreach (var e in f.EntriesIn(file.Name))
        {
            // Bytes between entries (the header) count only toward the file checksum.
            f.Stream(file.Name, e.Tensor, pos, e.Offset - pos, 0, 0, null, fileHash);
            var entryHash = Checksum.Create();
            f.Stream(file.Name, e.Tensor, e.Offset, e.Bytes, e.Offset, e.Offset + e.Bytes, chunk => entryHash.Append(chunk), fileHash);
            if (Checksum.Format(entryHash) != e.Checksum)
            {
                problems.Add(new CheckpointException(CheckpointError.Corrupt, path, e.Tensor, $"checksum mismatch: {Checksum.Format(entryHash)}, the index says {e.Checksum}."));
            }

            pos = e.Offset + e.Bytes;
        }

        f.Stream(file.Name, "(end of file)", pos, file.Size - pos, 0, 0, null, fileHash);
        if (Checksum.Format(fileHash) != file.Checksum)
        {
            problems.Add(new CheckpointException(CheckpointError.Corrupt, path, null, $"file checksum mismatch: {Checksum.Format(fileHash)}, the index says {file.Checksum}."));
        }

        return problems;
    }
}
