using System.Globalization;
using BnbDist.Sharding.Checkpoints;
using BnbDist.Tests;

namespace BnbDist.Sharding.Tests;

/// <summary>Training resumed on another world size after an offline reshard (real bnbrun processes, CPU TCP backend).</summary>
public partial class FullyShardEquivalenceTests
{
    /// <summary>
    /// 4-bit + LoRA TinyLm trained 3 steps on N ranks and saved (model shards, 8-bit AdamW state), resharded offline to M
    /// ranks, then trained 3 more steps on M ranks: the losses match a 1-rank run resumed from the same (unresharded)
    /// checkpoint, and the N-rank run that went on without stopping, within 1e-5 relative (as the equivalence test above).
    /// </summary>
    [Theory]
    [InlineData(4, 2)]
    [InlineData(2, 4)]
    [InlineData(3, 1)]
    [InlineData(1, 3)]
    public void TrainingResumedAfterOfflineReshardingMatchesAOneRankResume(int saved, int resumed)
    {
        const int SaveAt = 3, Steps = 6;
        var dir = Directory.CreateTempSubdirectory("bnbdist-resume-").FullName;
        try
        {
            var root = Path.Combine(dir, "root");
            var (uninterrupted, output) = RunWorker(saved, dir, "saved", "--steps", $"{Steps}", "--save-dir", root, "--save-at", $"{SaveAt}");
            Assert.Equal(Steps, uninterrupted.Losses.Length);

            var reshardedRoot = Path.Combine(dir, "resharded");
            var index = CheckpointResharder.Reshard(CheckpointPaths.StepFolder(root, SaveAt), CheckpointPaths.StepFolder(reshardedRoot, SaveAt), resumed);
            Assert.Equal(saved, index.ReshardedFromWorldSize);

            var resume = new[] { "--steps", $"{Steps}", "--resume-step", $"{SaveAt}", "--resume-dir" };
            var (afterReshard, outM) = RunWorker(resumed, dir, "resumed", [.. resume, reshardedRoot]);
            var (oneRank, out1) = RunWorker(1, dir, "one-rank", [.. resume, root]);
            Assert.Equal(Steps - SaveAt, afterReshard.Losses.Length);
            Assert.Equal(Steps - SaveAt, oneRank.Losses.Length);
            for (var i = 0; i < Steps - SaveAt; i++)
            {
                var loss = afterReshard.Losses[i];
                foreach (var (reference, what) in new[] { (oneRank.Losses[i], "1-rank resume"), (uninterrupted.Losses[SaveAt + i], $"{saved}-rank uninterrupted run") })
                {
                    var rel = Math.Abs(loss - reference) / Math.Abs(reference);
                    Assert.True(rel <= 1e-5, $"step {SaveAt + i}: loss {loss} on {resumed} ranks vs {reference} of the {what} (rel {rel:e2})\n{output}\n{outM}\n{out1}");
                }
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (Result Result, string Output) RunWorker(int ranks, string dir, string name, params string[] args)
    {
        var path = Path.Combine(dir, name + ".json");
        var r = Bnbrun.Run(["--nproc", ranks.ToString(CultureInfo.InvariantCulture), "--standalone", Worker, "--variant", "qlora", "--out", path, .. args]);
        Assert.True(r.ExitCode == 0, r.Output);
        return (Result.Read(path), r.Output);
    }
}
