using System.Globalization;
using System.Text.Json.Nodes;
using BnbDist.Tests;

namespace BnbDist.Sharding.Tests;

/// <summary>
/// The GPU sharding benchmark (bench/BnbDist.Bench `sharding`, bench/gpu/run.sh step `sharding`) on the CPU with a tiny
/// shape: the same code path (build on the CPU, per-layer move and FullyShard, PagedAdamW8bit over the shards, timed
/// steps, report) runs under bnbrun on 1 and 2 ranks, so a change to the sharding API cannot silently break it.
/// </summary>
[Collection("processes")]
public class ShardingBenchTests
{
    private static string Bench => Bnbrun.Built("bench/BnbDist.Bench", "bnbdist-bench.dll");

    /// <summary>
    /// Every run trains (finite loss near ln(vocab), optimizer state allocated), 2 ranks gather over the wire while 1
    /// rank does not, each of 2 ranks keeps fewer weight+state bytes than 1 rank, and the report combines the 4 runs
    /// into the top-level ratios.
    /// </summary>
    [Fact]
    public void BenchmarkRunsOnOneAndTwoRanksAndReports()
    {
        var dir = Directory.CreateTempSubdirectory("bnbdist-shbench-").FullName;
        foreach (var ranks in new[] { 1, 2 })
        {
            foreach (var variant in new[] { "nf4", "bf16" })
            {
                var path = Path.Combine(dir, $"sharding-{variant}-{ranks}gpu.json");
                var r = Bnbrun.Run(["--nproc", ranks.ToString(CultureInfo.InvariantCulture), "--standalone", Bench, "sharding", "--variant", variant,
                    "--preset", "tiny", "--device", "cpu", "--batch", "2", "--seq-len", "16", "--warmup", "1", "--steps", "2", "--out", path]);
                Assert.True(r.ExitCode == 0, r.Output);
                var run = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
                Assert.Equal(ranks, (int)run["world_size"]!);
                Assert.InRange((double)run["last_loss"]!, 4.0, 7.5); // random init: about ln(300) = 5.7
                Assert.True((double)run["step_ms_median"]! > 0 && (double)run["tokens_per_second"]! > 0, r.Output);
                Assert.True((long)run["optimizer_state_bytes_per_rank"]! > 0, "the optimizer never stepped");
                Assert.Equal(ranks > 1, (long)run["gathered_bytes_per_step"]! > 0);
            }
        }

        foreach (var variant in new[] { "nf4", "bf16" })
        {
            var one = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, $"sharding-{variant}-1gpu.json")))!;
            var two = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, $"sharding-{variant}-2gpu.json")))!;
            Assert.True((long)two["weight_and_state_bytes_per_rank"]! < (long)one["weight_and_state_bytes_per_rank"]!, variant);
        }

        var report = Path.Combine(dir, "sharding-cpu.json");
        using var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("dotnet", [Bench, "sharding-report", "--dir", dir, "--out", report])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        var output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, output);
        var doc = JsonNode.Parse(File.ReadAllText(report))!;
        Assert.True((double)doc["throughput_scaling_2gpu"]! > 0);
        Assert.InRange((double)doc["per_gpu_memory_ratio_2gpu"]!, 0.3, 1.0);
        Assert.Equal(4, doc["runs"]!.AsObject().Count);
    }
}
