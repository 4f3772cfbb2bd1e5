using BnbDist.Sharding.Checkpoints;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>
/// Real processes: a 2-rank job under bnbrun saves (sync and async) and loads through the TCP communicator; the
/// <c>bnbrun checkpoint</c> tools inspect, verify (failing on damage, naming file and tensor), reshard and export.
/// </summary>
[Collection("processes")]
public class ProcessTests
{
    [Fact]
    public void TwoRankJobSavesSyncAndAsyncThenLoadsByteIdenticalOnTwoRanksAndOnOne()
    {
        using var tmp = new TempFolder();
        var save = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "--nproc", "2", "--standalone", BuiltPrograms.Worker, "save", tmp.Path, "4");
        Assert.True(save.ExitCode == 0, save.Output);
        var saveAsync = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "--nproc", "2", "--standalone", BuiltPrograms.Worker, "save", tmp.Path, "8", "--async");
        Assert.True(saveAsync.ExitCode == 0, saveAsync.Output);
        Assert.Contains("rank 1 saved", saveAsync.Output, StringComparison.Ordinal);

        var load = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "--nproc", "2", "--standalone", BuiltPrograms.Worker, "load", tmp.Path, "8");
        Assert.True(load.ExitCode == 0, load.Output);
        Assert.Contains("rank 0 loaded step 8: identical", load.Output, StringComparison.Ordinal);
        Assert.Contains("rank 1 loaded step 8: identical", load.Output, StringComparison.Ordinal);
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 8, 1), Assert.Null); // 2 → 1 in this process
        Assert.All(RankThreads.LoadDifferences(tmp.Path, 4, 3, new CheckpointLoadOptions { Step = 4 }), Assert.Null);
    }

    [Fact]
    public void CheckpointToolsInspectVerifyReshardAndExportAndVerifyFailsOnDamageNamingFileAndTensor()
    {
        using var tmp = new TempFolder();
        var root = tmp.Sub("root");
        RankThreads.Save(root, 1, 2, new CheckpointSaveOptions { ConfigFingerprint = "fp-x" });
        var latest = RankThreads.Save(root, 2, 2, new CheckpointSaveOptions { ConfigFingerprint = "fp-x" });
        Directory.CreateDirectory(CheckpointPaths.StepFolder(root, 3)); // an unfinished save

        var inspect = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "inspect", root);
        Assert.True(inspect.ExitCode == 0, inspect.Output);
        Assert.Contains("latest -> step-2", inspect.Output, StringComparison.Ordinal);
        Assert.Contains("step-3  INCOMPLETE", inspect.Output, StringComparison.Ordinal);
        Assert.Contains("step 2, world size 2", inspect.Output, StringComparison.Ordinal);
        Assert.Contains("layers.0.weight.absmax  F32  [1001]  143 x 7", inspect.Output, StringComparison.Ordinal);

        Assert.Equal(0, BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "verify", root).ExitCode);

        var resharded = tmp.Sub("resharded");
        var reshard = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "reshard", root, "--to", "3", "--out", resharded);
        Assert.True(reshard.ExitCode == 0, reshard.Output);
        Assert.All(CheckpointTestData.Tensors, t =>
        {
            using var folder = CheckpointFolder.Open(resharded);
            Assert.Equal(CheckpointTestData.Bytes(CheckpointTestData.Full(t.Name, 2)), CheckpointTestData.Bytes(folder.ReadFull(t.Name)));
        });

        var export = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "export", latest, "--out", tmp.Sub("full.safetensors"));
        Assert.True(export.ExitCode == 0, export.Output);
        Assert.Contains("exported 10 tensors", export.Output, StringComparison.Ordinal);

        CorruptionTests.Damage(latest, "flip-data");
        var verify = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "verify", root);
        Assert.Equal(1, verify.ExitCode);
        Assert.Contains("rank-1-of-2.safetensors: tensor 'layers.1.weight': checksum mismatch", verify.Output, StringComparison.Ordinal);
        Assert.Contains($"OK: {CheckpointPaths.StepFolder(root, 1)}", verify.Output, StringComparison.Ordinal);

        File.Delete(Path.Combine(resharded, "rank-2-of-3.safetensors"));
        var missing = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "verify", resharded);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("rank-2-of-3.safetensors: missing", missing.Output, StringComparison.Ordinal);
    }

    /// <summary><c>bnbrun checkpoint export --format hf</c> writes the model and adapter; <c>checkpoint import</c> reads them back for 3 ranks, bytes unchanged.</summary>
    [Fact]
    public void CheckpointToolsExportAndImportHuggingFaceFolders()
    {
        using var tmp = new TempFolder();
        var ckpt = HfModels.SaveSharded(tmp.Sub("root"), 2, seed: 7);
        var hf = tmp.Sub("hf");
        var export = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "export", tmp.Sub("root"), "--out", hf, "--format", "hf");
        Assert.True(export.ExitCode == 0, export.Output);
        Assert.Contains("exported 16 model tensors in 1 file(s) and 4 adapter tensors", export.Output, StringComparison.Ordinal);

        var imported = CheckpointPaths.StepFolder(tmp.Sub("imported"), 0);
        var import = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "import", hf, "--adapter", Path.Combine(hf, "adapter"), "--out", imported, "--world-size", "3");
        Assert.True(import.ExitCode == 0, import.Output);
        Assert.Equal(3, CheckpointIndex.Read(imported).WorldSize);
        using var a = CheckpointFolder.Open(ckpt);
        using var b = CheckpointFolder.Open(imported);
        Assert.All(b.Index.Tensors, t => Assert.Equal(CheckpointTestData.Bytes(a.ReadFull(t.Name)), CheckpointTestData.Bytes(b.ReadFull(t.Name))));

        var bad = BuiltPrograms.Run(BuiltPrograms.Bnbrun, "checkpoint", "import", tmp.Sub("nothing-here"), "--out", tmp.Sub("x"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("model.safetensors", bad.Output, StringComparison.Ordinal);
    }
}
