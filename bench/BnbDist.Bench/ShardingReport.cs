using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace BnbDist.Bench;

/// <summary>
/// Combines the <see cref="ShardingBench"/> runs of one host (<c>sharding-{nf4,bf16}-{1,2}gpu.json</c> in one folder)
/// into the figures of issue #6: 2-GPU over 1-GPU throughput and per-GPU weight+state bytes for the NF4 model (the
/// top-level numbers) and for the bf16 baseline, with every run's details; prints them as a table.
/// </summary>
internal static class ShardingReport
{
    private static readonly string[] Variants = ["nf4", "bf16"];

    public static int Run(string dir, string outPath)
    {
        var runs = new JsonObject();
        var table = new Table().AddColumns("variant", "GPUs", "step ms", "tok/s", "weights+states/GPU MB", "peak device MB", "gathered/step MB", "bf16 FSDP would gather MB");
        var summary = new JsonObject();
        foreach (var v in Variants)
        {
            var one = Read(Path.Combine(dir, $"sharding-{v}-1gpu.json"));
            var two = Read(Path.Combine(dir, $"sharding-{v}-2gpu.json"));
            foreach (var (gpus, r) in new[] { (1, one), (2, two) })
            {
                if (r is null)
                {
                    continue;
                }

                runs[$"{v}_{gpus}gpu"] = r.DeepClone();
                table.AddRow(v, gpus.ToString(CultureInfo.InvariantCulture), F(r, "step_ms_median", 1), F(r, "tokens_per_second", 0),
                    Mb(r, "weight_and_state_bytes_per_rank"), Mb(r, "peak_device_used_bytes"), Mb(r, "gathered_bytes_per_step"), Mb(r, "bf16_fsdp_gathered_bytes_per_step"));
            }

            if (one is not null && two is not null)
            {
                summary[v] = new JsonObject
                {
                    ["throughput_scaling_2gpu"] = Ratio(two, one, "tokens_per_second"),
                    ["per_gpu_memory_ratio_2gpu"] = Ratio(two, one, "weight_and_state_bytes_per_rank"),
                    ["per_gpu_peak_device_ratio_2gpu"] = Ratio(two, one, "peak_device_used_bytes"),
                    ["gathered_over_bf16_fsdp_2gpu"] = Ratio(two, two, "gathered_bytes_per_step", "bf16_fsdp_gathered_bytes_per_step"),
                };
            }
        }

        // The NF4 model on 2 GPUs without prefetch: what overlapping the next block's all-gather with compute buys.
        if (Read(Path.Combine(dir, "sharding-nf4-2gpu-noprefetch.json")) is { } noPrefetch)
        {
            runs["nf4_2gpu_noprefetch"] = noPrefetch.DeepClone();
            table.AddRow("nf4 (no prefetch)", "2", F(noPrefetch, "step_ms_median", 1), F(noPrefetch, "tokens_per_second", 0), Mb(noPrefetch, "weight_and_state_bytes_per_rank"),
                Mb(noPrefetch, "peak_device_used_bytes"), Mb(noPrefetch, "gathered_bytes_per_step"), Mb(noPrefetch, "bf16_fsdp_gathered_bytes_per_step"));
            if (runs["nf4_2gpu"] is JsonObject withPrefetch)
            {
                summary["prefetch_speedup_2gpu"] = Ratio(withPrefetch, noPrefetch, "tokens_per_second");
            }
        }

        var nf4 = summary["nf4"]?.AsObject();
        var doc = new JsonObject
        {
            ["throughput_scaling_2gpu"] = nf4?["throughput_scaling_2gpu"]?.DeepClone(),
            ["per_gpu_memory_ratio_2gpu"] = nf4?["per_gpu_memory_ratio_2gpu"]?.DeepClone(),
            ["goals"] = new JsonObject
            {
                ["throughput_scaling_2gpu_min"] = 1.9,
                ["per_gpu_memory_ratio_2gpu_max"] = 0.55,
                ["met"] = nf4 is not null && (double?)nf4["throughput_scaling_2gpu"] >= 1.9 && (double?)nf4["per_gpu_memory_ratio_2gpu"] <= 0.55,
            },
            ["summary"] = summary,
            ["definitions"] = "throughput_scaling_2gpu = 2-GPU tokens/s over 1-GPU tokens/s at the same per-GPU batch (NF4 model); per_gpu_memory_ratio_2gpu = "
                + "2-GPU per-GPU bytes of weight shards + optimizer state over the 1-GPU run's; summary.bf16 = the same for the bf16 baseline.",
            ["runs"] = runs,
        };
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine(Markup.Escape($"nf4: throughput scaling {doc["throughput_scaling_2gpu"]?.ToJsonString() ?? "n/a"}, per-GPU weights+states ratio {doc["per_gpu_memory_ratio_2gpu"]?.ToJsonString() ?? "n/a"}; bf16: {summary["bf16"]?.ToJsonString() ?? "n/a"}"));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
        File.WriteAllText(outPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(outPath)}");
        return nf4 is null ? 1 : 0;
    }

    private static JsonObject? Read(string path) => File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path))!.AsObject() : null;

    // null where the denominator is zero (device memory on the CPU, gathered bytes of one rank).
    private static double? Ratio(JsonObject a, JsonObject b, string key, string? keyB = null) =>
        (double)b[keyB ?? key]! is var d && d != 0 ? Math.Round((double)a[key]! / d, 4) : null;

    private static string F(JsonObject r, string key, int digits) => ((double)r[key]!).ToString("F" + digits, CultureInfo.InvariantCulture);

    private static string Mb(JsonObject r, string key) => ((double)r[key]! / 1e6).ToString("F1", CultureInfo.InvariantCulture);
}
