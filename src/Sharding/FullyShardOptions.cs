namespace BnbDist.Sharding;

/// <summary>Options of <see cref="FullyShard.Apply"/> (after PyTorch FSDP2's <c>fully_shard</c> arguments).</summary>
public sealed record FullyShardOptions
{
    /// <summary>
    /// Copy every tensor from rank 0 before slicing (FSDP's <c>sync_module_states</c>), so ranks that initialized or
    /// quantized differently still start identical. Off when every rank loaded the same checkpoint.
    /// </summary>
    public bool SyncModuleStates { get; init; } = true;

    /// <summary>
    /// Free a block's gathered 4-bit weights after its forward and gather them again just before its backward
    /// (FSDP2's <c>reshard_after_forward</c>): peak memory holds one block's weights instead of the whole model's.
    /// Float parameters stay gathered until the step's gradients are reduced, because autograd saved them.
    /// </summary>
    public bool ReshardAfterForward { get; init; } = true;

    /// <summary>Start the next block's all-gather while the current block computes (order learned on the first step).</summary>
    public bool Prefetch { get; init; } = true;

    /// <summary>Reduction of gradients across ranks: average (data parallel, the default) or sum.</summary>
    public bool AverageGradients { get; init; } = true;
}
