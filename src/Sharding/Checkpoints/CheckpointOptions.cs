namespace BnbDist.Sharding.Checkpoints;

/// <summary>How <see cref="ShardedCheckpointer"/> saves.</summary>
public sealed record CheckpointSaveOptions
{
    /// <summary>Complete checkpoints kept under the root (older ones are deleted after a save commits); 0 keeps all.</summary>
    public int KeepLast { get; init; } = 3;

    /// <summary>A string describing the run's configuration (model, quantization, optimizer); stored in the index and checkable on load.</summary>
    public string ConfigFingerprint { get; init; } = string.Empty;

    /// <summary>Replace a complete checkpoint of the same step instead of failing.</summary>
    public bool Overwrite { get; init; }

    /// <summary>
    /// Keep the host copies of an async save for the next one (on by default): after the first async save, the training
    /// stall is a memory copy instead of fresh allocations, at the price of one checkpoint's worth of host memory held
    /// until the checkpointer is disposed.
    /// </summary>
    public bool ReuseAsyncBuffers { get; init; } = true;
}

/// <summary>How <see cref="ShardedCheckpointer"/> loads.</summary>
public sealed record CheckpointLoadOptions
{
    /// <summary>Load this step; null loads the latest complete checkpoint.</summary>
    public long? Step { get; init; }

    /// <summary>Check every byte read against the index's checksums (on by default; off trades safety for speed).</summary>
    public bool VerifyChecksums { get; init; } = true;

    /// <summary>Fail with <see cref="CheckpointError.Mismatch"/> if the checkpoint was saved with another world size (instead of resharding).</summary>
    public bool RequireSameWorldSize { get; init; }

    /// <summary>If set, fail with <see cref="CheckpointError.Mismatch"/> unless the checkpoint's config fingerprint equals this.</summary>
    public string? ExpectedFingerprint { get; init; }

    /// <summary>
    /// If the chosen checkpoint is corrupt or incomplete on any rank, load the previous complete one instead (logged);
    /// without it the problem is thrown.
    /// </summary>
    public bool FallbackToPrevious { get; init; }
}
