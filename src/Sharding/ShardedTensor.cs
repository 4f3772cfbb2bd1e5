using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// One rank's slice of one flattened tensor (a weight component, a trainable parameter, an optimizer state) and what
/// is needed to put the whole tensor back together: what sharded checkpoints save and reshard.
/// </summary>
/// <param name="Name">Unique name (e.g. <c>model.layers.0.mlp.up_proj.weight.absmax</c>, <c>optim.state.3.state1</c>).</param>
/// <param name="Local">This rank's slice: 1-D, exactly <c>Layout.Slice(Rank, Length, UnitsPerAtom).Length</c> elements (no padding).</param>
/// <param name="GlobalShape">Shape of the whole tensor (its elements are <see cref="Length"/> in row-major order).</param>
/// <param name="Layout">The split across ranks (atoms and world size).</param>
/// <param name="UnitsPerAtom">Elements of this tensor per atom of <paramref name="Layout"/>.</param>
/// <param name="Rank">Which rank's slice <see cref="Local"/> is.</param>
public sealed record ShardedTensor(string Name, Tensor Local, long[] GlobalShape, ShardLayout Layout, long UnitsPerAtom, int Rank)
{
    /// <summary>Elements of the whole tensor.</summary>
    public long Length => GlobalShape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The elements of the whole tensor that <see cref="Local"/> holds.</summary>
    public ShardRange Range => Layout.Slice(Rank, Length, UnitsPerAtom);
}
