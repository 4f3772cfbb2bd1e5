namespace BnbDist.Sharding;

/// <summary>A contiguous range of a flattened tensor: <see cref="Start"/> and <see cref="Length"/> in the tensor's units.</summary>
/// <param name="Start">First unit (element or byte) of the range.</param>
/// <param name="Length">Number of units; 0 for a rank that owns nothing.</param>
public readonly record struct ShardRange(long Start, long Length)
{
    /// <summary>One past the last unit.</summary>
    public long End => Start + Length;
}

/// <summary>
/// How a flattened tensor is split across ranks: in whole <em>atoms</em> (a quantization block, a nested-statistics
/// block, an optimizer-state block), rank r owning atoms [r·k, (r+1)·k) with k = ⌈atoms / world⌉, so no block ever
/// straddles two ranks and every rank's padded slice has the same length (what all-gather and reduce-scatter need).
/// </summary>
/// <remarks>
/// One layout serves every component of a tensor: a 4-bit weight's packed bytes, its absmax and its nested absmax are
/// each sliced with their own units-per-atom, so the slices a rank holds always describe the same elements. Checkpoints
/// record the atom count and world size; resharding to another world size is only concatenating and re-slicing bytes.
/// </remarks>
public sealed class ShardLayout
{
    /// <summary>Creates the layout of <paramref name="atoms"/> atoms over <paramref name="worldSize"/> ranks.</summary>
    public ShardLayout(long atoms, int worldSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(atoms);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(worldSize);
        Atoms = atoms;
        WorldSize = worldSize;
        AtomsPerRank = (atoms + worldSize - 1) / worldSize;
    }

    /// <summary>Number of atoms of the whole tensor.</summary>
    public long Atoms { get; }

    /// <summary>Number of ranks.</summary>
    public int WorldSize { get; }

    /// <summary>Atoms in every rank's padded slice (the last ranks may own fewer, or none).</summary>
    public long AtomsPerRank { get; }

    /// <summary>The layout of a tensor of <paramref name="length"/> units cut into atoms of <paramref name="unitsPerAtom"/> units (the last may be partial).</summary>
    public static ShardLayout ForLength(long length, long unitsPerAtom, int worldSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(unitsPerAtom);
        return new ShardLayout((length + unitsPerAtom - 1) / unitsPerAtom, worldSize);
    }

    /// <summary>The atoms rank <paramref name="rank"/> owns.</summary>
    public ShardRange AtomRange(int rank)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, WorldSize);
        var start = Math.Min(Atoms, rank * AtomsPerRank);
        var end = Math.Min(Atoms, start + AtomsPerRank);
        return new ShardRange(start, end - start);
    }

    /// <summary>
    /// The units of a component of <paramref name="componentLength"/> units (<paramref name="unitsPerAtom"/> per atom, the
    /// last atom possibly partial) that rank <paramref name="rank"/> owns.
    /// </summary>
    public ShardRange Slice(int rank, long componentLength, long unitsPerAtom)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(componentLength);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(unitsPerAtom);
        if (componentLength > Atoms * unitsPerAtom || (Atoms > 0 && componentLength <= (Atoms - 1) * unitsPerAtom))
        {
            throw new ArgumentException(
                $"a component of {componentLength} units at {unitsPerAtom} per atom does not have {Atoms} atoms.", nameof(componentLength));
        }

        var atoms = AtomRange(rank);
        var start = Math.Min(componentLength, atoms.Start * unitsPerAtom);
        var end = Math.Min(componentLength, atoms.End * unitsPerAtom);
        return new ShardRange(start, end - start);
    }

    /// <summary>Length of every rank's padded slice of a component with <paramref name="unitsPerAtom"/> units per atom.</summary>
    public long PaddedSliceLength(long unitsPerAtom) => AtomsPerRank * unitsPerAtom;

    /// <inheritdoc/>
    public override string ToString() => $"{Atoms} atoms over {WorldSize} ranks ({AtomsPerRank} each)";
}
