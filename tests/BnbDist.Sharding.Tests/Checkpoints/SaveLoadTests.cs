using BnbDist.Sharding.Checkpoints;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>Collective save and load on 1 and 3 ranks (threads with real TCP communicators), async saves, retention, and failed saves.</summary>
public class SaveLoadTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void SameWorldSizeRoundTripIsByteIdenticalIncludingReplicatedTensorsAndExtras(int world)
    {
        using var tmp = new TempFolder();
        var folder = RankThreads.Save(tmp.Path, 7, world, new CheckpointSaveOptions { ConfigFingerprint = "cfg-a" });

        Assert.Equal(CheckpointPaths.StepFolder(tmp.Path, 7), folder);
        var files = Directory.GetFiles(folder).Select(Path.GetFileName).Order().ToArray();
        string[] expected = [.. Enumerable.Range(0, world).Select(r => CheckpointPaths.RankFile(r, world)), "index.json", "replicated.safetensors"];
        Assert.Equal(expected.Order(), files);
        var index = CheckpointIndex.Read(folder);
        Assert.Equal((7L, world, "cfg-a"), (index.Step, index.WorldSize, index.ConfigFingerprint));
        Assert.Equal(CheckpointTestData.Tensors.Length, index.Tensors.Count);
        Assert.Equal(7L, CheckpointCatalog.LatestPointer(tmp.Path));
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 7, world, new CheckpointLoadOptions { RequireSameWorldSize = true, ExpectedFingerprint = "cfg-a" }), Assert.Null);
        Assert.Empty(CheckpointVerifier.Verify(folder));
    }

    [Theory]
    [InlineData(2, 2)]
    [InlineData(2, 3)]
    public void LoadingIntoExistingSlicesFillsTheCallersTensorsInPlace(int from, int to)
    {
        using var tmp = new TempFolder();
        RankThreads.Save(tmp.Path, 9, from);
        var results = RankThreads.RunAll(to, comm =>
        {
            var rank = comm?.Rank ?? 0;
            var targets = CheckpointTestData.State(1, rank, to).Sharded.Take(5).ToList(); // another step's values, to be overwritten
            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            using var loaded = ckpt.Load(into: targets);
            Assert.All(targets, t => Assert.Same(t, loaded.Sharded[t.Name]));
            return CheckpointTestData.Difference(loaded, 9);
        });
        Assert.All(results, Assert.Null);

        var wrong = CheckpointTestData.State(9, 0, 1).Sharded[1] with { UnitsPerAtom = 1001, Layout = new ShardLayout(1, 1) };
        var ex = Assert.IsType<CheckpointException>(RankThreads.Run(1, _ => new ShardedCheckpointer(tmp.Path).Load(into: [wrong]))[0].Error);
        Assert.Equal((CheckpointError.Mismatch, "layers.0.weight.absmax"), (ex.Error, ex.TensorName));
    }

    [Fact]
    public void KeepsTheLastKCheckpointsAndLatestNamesTheNewest()
    {
        using var tmp = new TempFolder();
        foreach (var step in new long[] { 10, 20, 30, 40 })
        {
            RankThreads.Save(tmp.Path, step, 2, new CheckpointSaveOptions { KeepLast = 2 });
        }

        Assert.Equal([30L, 40L], CheckpointCatalog.List(tmp.Path).Select(c => c.Step));
        Assert.Equal(40L, CheckpointCatalog.LatestPointer(tmp.Path));
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 40, 2), Assert.Null);
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 30, 2, new CheckpointLoadOptions { Step = 30 }), Assert.Null);
    }

    [Fact]
    public async Task AsyncSaveWritesTheValuesAtCallTimeEvenIfTrainingChangesThemAfterwards()
    {
        using var tmp = new TempFolder();
        await using var ckpt = new ShardedCheckpointer(tmp.Path);
        var state = CheckpointTestData.State(5, 0, 1);
        var first = ckpt.SaveAsync(5, state);
        foreach (var st in state.Sharded)
        {
            st.Local.zero_(); // training moves on while the files are written
        }

        state.Extras!["rng_state"].fill_(0);
        var second = ckpt.SaveAsync(6, CheckpointTestData.State(6, 0, 1)); // waits for the first
        Assert.True(first.IsCompleted);
        await ckpt.WaitAsync();
        Assert.Equal(CheckpointPaths.StepFolder(tmp.Path, 6), await second);

        Assert.All(RankThreads.LoadDifferences(tmp.Path, 5, 1, new CheckpointLoadOptions { Step = 5 }), Assert.Null);
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 6, 1), Assert.Null);
    }

    [Fact]
    public void SavingAStepTwiceFailsUnlessOverwriteIsSet()
    {
        using var tmp = new TempFolder();
        RankThreads.Save(tmp.Path, 3, 1);
        var ex = Assert.Throws<AggregateException>(() => RankThreads.Save(tmp.Path, 3, 1));
        Assert.Equal(CheckpointError.SaveFailed, Assert.IsType<CheckpointException>(ex.InnerExceptions.Single()).Error);
        RankThreads.Save(tmp.Path, 3, 1, new CheckpointSaveOptions { Overwrite = true });
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 3, 1), Assert.Null);
    }

    [Fact]
    public void RanksThatDisagreeOnATensorFailOnEveryRankNamingItAndLeaveNoCheckpoint()
    {
        using var tmp = new TempFolder();
        var results = RankThreads.Run(2, comm =>
        {
            var state = CheckpointTestData.State(1, comm!.Rank, 2);
            if (comm.Rank == 1)
            {
                // Rank 1 claims another dtype for one tensor (as if it had wrapped a different model).
                var st = state.Sharded[0];
                state = state with { Sharded = [st with { Local = st.Local.to_type(ScalarType.Int8) }, .. state.Sharded.Skip(1)] };
            }

            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            return ckpt.Save(1, state);
        });

        Assert.All(results, r => Assert.Contains("layers.0.weight", Assert.IsType<CheckpointException>(r.Error).Message, StringComparison.Ordinal));
        Assert.False(CheckpointCatalog.List(tmp.Path).Single().IsComplete);
    }

    [Fact]
    public void ABadSliceOnOneRankFailsTheSaveOnEveryRankWithoutAHang()
    {
        using var tmp = new TempFolder();
        var results = RankThreads.Run(3, comm =>
        {
            var state = CheckpointTestData.State(1, comm!.Rank, 3);
            if (comm.Rank == 2)
            {
                var st = state.Sharded[1];
                state = state with { Sharded = [state.Sharded[0], st with { Local = st.Local.narrow(0, 0, st.Local.shape[0] - 1) }, .. state.Sharded.Skip(2)] };
            }

            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            return ckpt.Save(1, state);
        });

        Assert.All(results, r => Assert.Equal(CheckpointError.SaveFailed, Assert.IsType<CheckpointException>(r.Error).Error));
        Assert.Contains("layers.0.weight.absmax", results[2].Error!.Message, StringComparison.Ordinal);
        Assert.Empty(CheckpointCatalog.List(tmp.Path));
    }
}
