using BnbDist.Serialization;
using BnbDist.Sharding.Checkpoints;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>
/// A checkpoint saved by N ranks loads on M ranks (and reshards offline to M rank files) with every rank holding exactly
/// its new layout's bytes of the full tensors: the same bytes, moved, for u8/f32/bf16 tensors whose sizes do not divide
/// by either world size, with atom sizes from 1 to 2048 (including a one-atom tensor and an empty one).
/// </summary>
public class ReshardingTests
{
    public static TheoryData<int, int> WorldPairs() => new() { { 4, 2 }, { 2, 4 }, { 3, 1 }, { 1, 3 } };

    [Theory]
    [MemberData(nameof(WorldPairs))]
    public void LoadingOnAnotherWorldSizeGivesEachRankItsNewSliceOfTheSameBytes(int from, int to)
    {
        using var tmp = new TempFolder();
        RankThreads.Save(tmp.Path, 11, from);
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 11, to), Assert.Null);

        // The new slices, concatenated in rank order, are the full tensors byte for byte.
        var loaded = RankThreads.RunAll(to, comm =>
        {
            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            using var l = ckpt.Load();
            Assert.Equal(from != to, l.Resharded);
            return l.Sharded.ToDictionary(kv => kv.Key, kv => CheckpointTestData.Bytes(kv.Value.Local));
        });
        foreach (var (name, _, _, _) in CheckpointTestData.Tensors)
        {
            Assert.Equal(CheckpointTestData.Bytes(CheckpointTestData.Full(name, 11)), loaded.SelectMany(l => l[name]).ToArray());
        }
    }

    [Theory]
    [MemberData(nameof(WorldPairs))]
    public void OfflineReshardWritesAnIndexedCheckpointWhoseFullTensorsAreByteIdentical(int from, int to)
    {
        using var tmp = new TempFolder();
        var source = RankThreads.Save(tmp.Sub("root"), 12, from, new CheckpointSaveOptions { ConfigFingerprint = "fp" });
        var destination = tmp.Sub("resharded");

        var index = CheckpointResharder.Reshard(source, destination, to);

        Assert.Equal((to, from, 12L, "fp"), (index.WorldSize, index.ReshardedFromWorldSize, index.Step, index.ConfigFingerprint));
        Assert.Equal(to, Directory.GetFiles(destination, "rank-*").Length);
        Assert.Empty(CheckpointVerifier.Verify(destination));
        using var folder = CheckpointFolder.Open(destination);
        foreach (var (name, _, _, _) in CheckpointTestData.Tensors)
        {
            using var full = folder.ReadFull(name);
            using var expected = CheckpointTestData.Full(name, 12);
            Assert.Equal(expected.shape, full.shape);
            Assert.Equal(CheckpointTestData.Bytes(expected), CheckpointTestData.Bytes(full));
        }

        // Rank r of the new world keeps old rank r's extras, when there was one.
        for (var r = 0; r < to; r++)
        {
            var extras = folder.ReadExtras(r);
            Assert.Equal(r < from ? 2 : 0, extras.Count);
        }
    }

    [Fact]
    public void ExportWritesOneSafetensorsFileWithEveryFullTensorAndTheReplicatedOnes()
    {
        using var tmp = new TempFolder();
        var source = RankThreads.Save(tmp.Path, 13, 3);
        var file = tmp.Sub("model.safetensors");

        var count = CheckpointExporter.Export(source, file);

        var tensors = SafeTensorsFile.Load(file);
        Assert.Equal(CheckpointTestData.Tensors.Length + 2, count);
        Assert.Equal(count, tensors.Count);
        foreach (var (name, _, _, _) in CheckpointTestData.Tensors)
        {
            using var expected = CheckpointTestData.Full(name, 13);
            Assert.Equal(expected.shape, tensors[name].shape);
            Assert.Equal(CheckpointTestData.Bytes(expected), CheckpointTestData.Bytes(tensors[name]));
        }

        Assert.Equal("13", SafeTensorsFile.Open(file).Metadata["bnbdist.step"]);
        Assert.Equal(CheckpointTestData.Bytes(CheckpointTestData.State(13, 0, 1).Replicated!["code"]), CheckpointTestData.Bytes(tensors["code"]));
    }
}
