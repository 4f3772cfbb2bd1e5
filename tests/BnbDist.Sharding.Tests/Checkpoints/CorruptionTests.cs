using System.Text.Json.Nodes;
using BnbDist.Sharding.Checkpoints;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>
/// Damaged checkpoints: each damage gives a typed <see cref="CheckpointException"/> naming the file and (where one is to
/// blame) the tensor, on load and in <see cref="CheckpointVerifier"/>; a load with fallback gets the previous checkpoint.
/// </summary>
public class CorruptionTests
{
    /// <summary>(case, expected error, file the error names, tensor it names or null).</summary>
    public static TheoryData<string, CheckpointError, string, string?> Cases() => new()
    {
        { "flip-data", CheckpointError.Corrupt, "rank-1-of-2.safetensors", "layers.1.weight" },
        { "flip-extra", CheckpointError.Corrupt, "rank-0-of-2.safetensors", "loader_position" },
        { "flip-header", CheckpointError.Corrupt, "rank-0-of-2.safetensors", null },
        { "truncate", CheckpointError.Corrupt, "rank-1-of-2.safetensors", "layers.0.weight.absmax" },
        { "missing", CheckpointError.Incomplete, "rank-1-of-2.safetensors", null },
        { "index-shape", CheckpointError.BadIndex, "index.json", "layers.0.weight.absmax" },
        { "index-offset", CheckpointError.BadIndex, "index.json", "lora.A" },
        { "index-dtype", CheckpointError.BadIndex, "index.json", "optim.state.0.absmax1" },
        { "index-json", CheckpointError.BadIndex, "index.json", null },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EachDamageIsATypedErrorNamingFileAndTensorAndFallbackLoadsThePreviousCheckpoint(string damage, CheckpointError error, string file, string? tensor)
    {
        using var tmp = new TempFolder();
        RankThreads.Save(tmp.Path, 1, 2);
        var folder = RankThreads.Save(tmp.Path, 2, 2);
        Damage(folder, damage);

        void AssertNames(CheckpointException ex)
        {
            Assert.Equal(error, ex.Error);
            Assert.Equal(file, Path.GetFileName(ex.FilePath));
            Assert.Equal(tensor, ex.TensorName);
        }

        // verify reads every byte and reports the damage (once per file it affects).
        var problems = CheckpointVerifier.Verify(folder);
        Assert.Contains(problems, p => p.Error == error && p.TensorName == tensor);
        AssertNames(problems.First(p => p.Error == error && p.TensorName == tensor));

        // A load of the damaged (latest) checkpoint fails on every rank, the rank that saw it with the precise error.
        var results = RankThreads.Run(2, comm =>
        {
            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            using var loaded = ckpt.Load();
            return loaded.Step;
        });
        Assert.All(results, r => Assert.IsType<CheckpointException>(r.Error));
        AssertNames(results.Select(r => (CheckpointException)r.Error!).First(e => Path.GetFileName(e.FilePath) == file));

        // With fallback, every rank loads step 1 instead and says what it skipped.
        var fallback = RankThreads.RunAll(2, comm =>
        {
            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            using var loaded = ckpt.Load(new CheckpointLoadOptions { FallbackToPrevious = true });
            return (CheckpointTestData.Difference(loaded, 1), loaded.Skipped.Single());
        });
        Assert.All(fallback, f => Assert.Null(f.Item1));
        Assert.All(fallback, f => Assert.StartsWith("step 2:", f.Item2, StringComparison.Ordinal));
    }

    [Fact]
    public void AFolderWithoutIndexIsIncompleteIgnoredByLoadAndReportedByTheCatalog()
    {
        using var tmp = new TempFolder();
        RankThreads.Save(tmp.Path, 1, 2);
        var folder = RankThreads.Save(tmp.Path, 2, 2);
        File.Delete(Path.Combine(folder, CheckpointPaths.IndexFile));

        Assert.All(RankThreads.LoadDifferences(tmp.Path, 1, 2), Assert.Null);
        var partial = CheckpointCatalog.List(tmp.Path).Single(c => c.Step == 2);
        Assert.False(partial.IsComplete);
        Assert.Contains("no index.json", partial.Problem, StringComparison.Ordinal);
        var ex = Assert.IsType<CheckpointException>(RankThreads.Run(1, _ => CheckpointFolder.Open(folder))[0].Error);
        Assert.Equal(CheckpointError.Incomplete, ex.Error);
    }

    [Fact]
    public void WorldSizeAndFingerprintMismatchesAreRaisedWhenRequired()
    {
        using var tmp = new TempFolder();
        RankThreads.Save(tmp.Path, 1, 2, new CheckpointSaveOptions { ConfigFingerprint = "model-a" });

        var world = RankThreads.Run(3, comm =>
        {
            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            return ckpt.Load(new CheckpointLoadOptions { RequireSameWorldSize = true, FallbackToPrevious = true });
        });
        Assert.All(world, r => Assert.Equal(CheckpointError.Mismatch, Assert.IsType<CheckpointException>(r.Error).Error));

        var fingerprint = RankThreads.Run(2, comm =>
        {
            using var ckpt = new ShardedCheckpointer(tmp.Path, comm);
            return ckpt.Load(new CheckpointLoadOptions { ExpectedFingerprint = "model-b" });
        });
        Assert.All(fingerprint, r => Assert.Contains("model-a", Assert.IsType<CheckpointException>(r.Error).Message, StringComparison.Ordinal));
    }

    internal static void Damage(string folder, string damage)
    {
        var indexPath = Path.Combine(folder, CheckpointPaths.IndexFile);
        var index = CheckpointIndex.Read(folder);
        var json = JsonNode.Parse(File.ReadAllText(indexPath))!;
        JsonNode Tensor(string name) => json["tensors"]!.AsArray().Single(t => (string?)t!["name"] == name)!;
        switch (damage)
        {
            case "flip-data":
                var slice = index.TensorRecord("layers.1.weight")!.Slices[1];
                FlipByte(Path.Combine(folder, slice.File), slice.Offset + (slice.Bytes / 2));
                break;
            case "flip-extra":
                var extra = index.Extras.Single(e => e.Rank == 0 && e.Name == "loader_position");
                FlipByte(Path.Combine(folder, extra.File), extra.Offset);
                break;
            case "flip-header":
                FlipByte(Path.Combine(folder, "rank-0-of-2.safetensors"), 8); // the header's opening brace
                break;
            case "truncate":
                var cut = index.TensorRecord("layers.0.weight.absmax")!.Slices[1];
                using (var fs = new FileStream(Path.Combine(folder, cut.File), FileMode.Open))
                {
                    fs.SetLength(cut.Offset + 10);
                }

                break;
            case "missing":
                File.Delete(Path.Combine(folder, "rank-1-of-2.safetensors"));
                break;
            case "index-shape":
                Tensor("layers.0.weight.absmax")["global_shape"] = new JsonArray(1002);
                break;
            case "index-offset":
                Tensor("lora.A")["slices"]![0]!["offset"] = (long)Tensor("lora.A")["slices"]![0]!["offset"]! + 2;
                break;
            case "index-dtype":
                Tensor("optim.state.0.absmax1")["dtype"] = "I32";
                break;
            case "index-json":
                File.WriteAllText(indexPath, "{\"format\": ");
                return;
            default:
                throw new ArgumentException(damage, nameof(damage));
        }

        if (damage.StartsWith("index-", StringComparison.Ordinal))
        {
            File.WriteAllText(indexPath, json.ToJsonString());
        }
    }

    private static void FlipByte(string path, long offset)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        fs.Position = offset;
        var b = fs.ReadByte();
        fs.Position = offset;
        fs.WriteByte((byte)(b ^ 0x5A));
    }
}
