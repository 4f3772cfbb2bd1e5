namespace BnbDist.Sharding.Tests;

public class ShardLayoutTests
{
    /// <summary>For any length, atom size and world size the slices are disjoint, in rank order, cover the component
    /// exactly, start on atom boundaries, and fit in the padded slice length.</summary>
    [Theory]
    [InlineData(0, 64, 3)]
    [InlineData(1, 64, 4)]
    [InlineData(64, 64, 2)]
    [InlineData(1000, 64, 3)]
    [InlineData(16384 * 5 + 7, 16384, 4)]
    [InlineData(257, 256, 8)]
    public void SlicesTileTheComponentOnAtomBoundaries(long length, long unitsPerAtom, int world)
    {
        var layout = ShardLayout.ForLength(length, unitsPerAtom, world);
        long next = 0;
        for (var r = 0; r < world; r++)
        {
            var s = layout.Slice(r, length, unitsPerAtom);
            Assert.Equal(next, s.Start);
            Assert.True(s.Length >= 0 && s.Length <= layout.PaddedSliceLength(unitsPerAtom));
            Assert.True(s.Length == 0 || s.Start % unitsPerAtom == 0);
            next = s.End;
        }

        Assert.Equal(length, next);
    }

    /// <summary>A component described in other units (packed bytes vs absmax entries) gets the slices of the same atoms.</summary>
    [Fact]
    public void ComponentsOfOneTensorShareAtoms()
    {
        const long elements = 3 * 16384 + 100; // 4-bit weight, blocksize 64, nested block 256 → 16384 elements per atom
        var layout = ShardLayout.ForLength(elements, 16384, 2);
        var packedBytes = (elements + 1) / 2;
        var absmax = (elements + 63) / 64;
        for (var r = 0; r < 2; r++)
        {
            var atoms = layout.AtomRange(r);
            Assert.Equal(atoms.Start * 8192, layout.Slice(r, packedBytes, 8192).Start);
            Assert.Equal(atoms.Start * 256, layout.Slice(r, absmax, 256).Start);
        }

        Assert.Equal(new ShardRange(8192 * 2, packedBytes - 8192 * 2), layout.Slice(1, packedBytes, 8192));
    }

    /// <summary>A component length that does not match the atom count is a caller bug and is refused by name.</summary>
    [Fact]
    public void MismatchedComponentLengthIsRefused()
    {
        var layout = ShardLayout.ForLength(1000, 64, 2);
        var ex = Assert.Throws<ArgumentException>(() => layout.Slice(0, 2000, 64));
        Assert.Equal("componentLength", ex.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.Slice(2, 1000, 64));
    }
}
