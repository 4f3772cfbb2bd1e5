using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// What one rank hands a sharded save: its slices of every sharded tensor, the tensors every rank holds identically,
/// and its own small extras.
/// </summary>
/// <param name="Sharded">
/// This rank's <see cref="ShardedTensor"/>s (quantized weight components, fp32 master shards, 8-bit optimizer states and
/// their absmax): every rank passes the same names, dtypes, global shapes and layouts, each with its own slice.
/// </param>
/// <param name="Replicated">
/// Tensors identical on every rank (code books, QuantState metadata as u8 JSON): rank 0 writes them, the others' are
/// checked equal by checksum. Null for none.
/// </param>
/// <param name="Extras">This rank's own small tensors (RNG state bytes, data-loader position): saved per rank. Null for none.</param>
public sealed record CheckpointState(
    IReadOnlyList<ShardedTensor> Sharded,
    IReadOnlyDictionary<string, Tensor>? Replicated = null,
    IReadOnlyDictionary<string, Tensor>? Extras = null);
