using System.CommandLine;
using System.Text.RegularExpressions;
using BnbDist.Backends.Interop;
using BnbDist.Bench;
using Spectre.Console;
using TorchSharp;

TorchRuntime.PreloadFromEnvironment();

var deviceOpt = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
var outOpt = new Option<string?>("--out") { Description = "Results JSON (default bench/results/gpu-<gpu>.json or cpu-<n>core.json); existing rows of other benchmarks are kept." };
var repeatsOpt = new Option<int?>("--repeats") { Description = "Timed repetitions (default 30 on CUDA, 5 on CPU)." };
var warmupOpt = new Option<int>("--warmup") { Description = "Untimed warm-up runs.", DefaultValueFactory = _ => 3 };
var elementsOpt = new Option<long>("--elements") { Description = "Elements of the 8-bit blockwise cases.", DefaultValueFactory = _ => 268435456 };
var sideOpt = new Option<long>("--side") { Description = "Side of the square 4-bit matrix.", DefaultValueFactory = _ => 8192 };
var suiteOpt = new Option<string>("--suite") { Description = "all (quant and optim), quant (kernels against copy bandwidth), optim (optimizer steps: fused kernels and PagedAdamW8bit on CUDA, the classes against TorchSharp AdamW on CPU), nn (4-bit GEMV/matmul, LLM.int8 and their 16-bit baselines; CUDA only), mem-qlora / mem-lora (device memory of one LoRA step through one layer; CUDA only, one per process) or checkpoint (sharded checkpoints against the raw disk).", DefaultValueFactory = _ => "all" };
var optElementsOpt = new Option<long?>("--optim-elements") { Description = "Elements of each of the 4 parameters of the optimizer-class rows (default 64M on CUDA, 4M on CPU)." };
var checkpointGbOpt = new Option<double>("--checkpoint-gb") { Description = "Checkpoint size of the checkpoint suite, GB.", DefaultValueFactory = _ => 4.0 };
var checkpointDirOpt = new Option<string>("--checkpoint-dir") { Description = "Scratch folder of the checkpoint suite (on the disk to measure; deleted after).", DefaultValueFactory = _ => Path.Combine(Path.GetTempPath(), "bnbdist-ckpt-bench") };
var root = new RootCommand("BnbDist benchmarks: quantization kernels and optimizer steps against the device's copy bandwidth; sharded checkpoints against the disk.")
{
    deviceOpt, outOpt, repeatsOpt, warmupOpt, elementsOpt, sideOpt, suiteOpt, optElementsOpt, checkpointGbOpt, checkpointDirOpt,
};
root.SetAction(r =>
{
    if (r.GetValue(suiteOpt) == "checkpoint")
    {
        var ckptOut = r.GetValue(outOpt) ?? Path.Combine(FindRepoRoot() ?? Directory.GetCurrentDirectory(), "bench", "results", $"checkpoint-cpu-{Environment.ProcessorCount}core.json");
        var bench = new CheckpointBench(r.GetValue(checkpointDirOpt)!, (long)(r.GetValue(checkpointGbOpt) * 1e9), r.GetValue(repeatsOpt) ?? 3);
        var doc = bench.Run($"CPU: {CpuModel()} ({Environment.ProcessorCount} threads)");
        doc["command"] = $"dotnet bnbdist-bench.dll {string.Join(' ', args)}";
        CheckpointBench.Write(ckptOut, doc);
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(ckptOut)}");
        return 0;
    }

    var device = new torch.Device(r.GetValue(deviceOpt)!);
    var suite = r.GetValue(suiteOpt)!;

    var repeats = r.GetValue(repeatsOpt) ?? (device.type == DeviceType.CUDA ? 30 : 5);
    string deviceName;
    if (device.type == DeviceType.CUDA)
    {
        var idx = Math.Max(0, device.index);
        CudaRuntime.SetDevice(idx);
        var (major, minor) = CudaRuntime.ComputeCapability(idx);
        deviceName = $"{CudaRuntime.DeviceName(idx)} (sm_{major}{minor})";
    }
    else
    {
        deviceName = $"CPU: {CpuModel()} ({Environment.ProcessorCount} threads)";
    }

    if (suite is "mem-qlora" or "mem-lora" && device.type == DeviceType.CUDA)
    {
        var memRow = LayerMemoryBench.Run(device, suite == "mem-qlora");
        var memOut = r.GetValue(outOpt) ?? DefaultPath(device, deviceName);
        ResultsFile.Write(memOut, deviceName, 0, [memRow],
            new Dictionary<string, string> { ["command"] = $"dotnet bnbdist-bench.dll {string.Join(' ', args)}" });
        AnsiConsole.MarkupLine($"{memRow.Name}: [bold]{memRow.Value} {memRow.Unit}[/] ({Markup.Escape(memRow.Note ?? string.Empty)}); wrote {Markup.Escape(memOut)}");
        return 0;
    }

    var outPath = r.GetValue(outOpt) ?? DefaultPath(device, deviceName);
    using var timing = new Timing(device, r.GetValue(warmupOpt), repeats);
    AnsiConsole.MarkupLine($"Benchmarking on [bold]{Markup.Escape(deviceName)}[/], median of {repeats}...");
    var copy = CopyBandwidth.Measure(device, timing, 1L << 30);
    AnsiConsole.MarkupLine($"copy bandwidth (1 GiB, read+write): [bold]{copy:F1} GB/s[/]");

    var results = new List<BenchResult>();
    var table = new Table().AddColumns("name", "median ms", "GB/s", "% of copy", "min ms", "max ms");
    var optimizers = new OptimizerBench(device, timing);
    var classes = new OptimizerClassBench(device, timing, 4, r.GetValue(optElementsOpt) ?? (device.type == DeviceType.CUDA ? 64L << 20 : 4L << 20));
    var optimRows = optimizers.Run().Concat(classes.Run());
    var linear = new LinearBench(device, timing);
    var rows = suite switch
    {
        "quant" => new QuantizationBench(device, timing, r.GetValue(elementsOpt), r.GetValue(sideOpt)).Run(),
        "optim" => optimRows,
        "nn" => linear.Run(),
        _ => new QuantizationBench(device, timing, r.GetValue(elementsOpt), r.GetValue(sideOpt)).Run().Concat(optimRows),
    };
    foreach (var res in rows)
    {
        results.Add(res);
        if (res.Unit is not null)
        {
            table.AddRow(res.Name, $"{res.Value} {res.Unit}", string.Empty, string.Empty, string.Empty, string.Empty);
            continue;
        }

        table.AddRow(res.Name, $"{res.MedianMs:F4}", $"{res.GBps:F1}", $"{100 * res.GBps / copy:F1}", $"{res.MinMs:F4}", $"{res.MaxMs:F4}");
    }

    AnsiConsole.Write(table);
    var extra = new Dictionary<string, string>
    {
        ["command"] = $"dotnet bnbdist-bench.dll {string.Join(' ', args)}",
    };
    var stateBytes = optimizers.StateBytes.Concat(classes.StateBytes).ToList();
    if (stateBytes.Count > 0)
    {
        extra["state_bytes_per_param"] = string.Join(", ", stateBytes.Select(kv => $"{kv.Key} {kv.Value}"));
    }

    ResultsFile.Write(outPath, deviceName, copy, results, extra);
    AnsiConsole.MarkupLine($"wrote {Markup.Escape(outPath)}");
    return linear.Failed ? 1 : 0;
});
var ncclOutOpt = new Option<string>("--out") { Description = "JSON written by rank 0.", DefaultValueFactory = _ => "nccl-bnbdist.json" };
var ncclMinOpt = new Option<long>("--min-bytes") { Description = "Smallest size.", DefaultValueFactory = _ => 1L << 20 };
var ncclMaxOpt = new Option<long>("--max-bytes") { Description = "Largest size (sizes double from the smallest).", DefaultValueFactory = _ => 1L << 30 };
var ncclItersOpt = new Option<int>("--iters") { Description = "Collectives per timed run.", DefaultValueFactory = _ => 20 };
var ncclRepsOpt = new Option<int>("--reps") { Description = "Timed runs (the median is reported).", DefaultValueFactory = _ => 5 };
var ncclCmd = new Command("nccl", "Bus bandwidth of the NCCL collectives; run under bnbrun, one process per GPU.")
{
    ncclOutOpt, ncclMinOpt, ncclMaxOpt, ncclItersOpt, ncclRepsOpt,
};
ncclCmd.SetAction(r => NcclBench.Run(r.GetValue(ncclOutOpt)!, r.GetValue(ncclMinOpt), r.GetValue(ncclMaxOpt), r.GetValue(ncclItersOpt), r.GetValue(ncclRepsOpt)));
root.Subcommands.Add(ncclCmd);
var shVariantOpt = new Option<string>("--variant") { Description = "nf4 (NF4 + double-quant frozen base) or bf16 (unquantized frozen base, the baseline).", DefaultValueFactory = _ => "nf4" };
var shPresetOpt = new Option<string>("--preset") { Description = "tinyllama (1.1B shape) or tiny (CPU tests).", DefaultValueFactory = _ => "tinyllama" };
var shBatchOpt = new Option<int>("--batch") { Description = "Sequences per rank per step.", DefaultValueFactory = _ => 4 };
var shSeqOpt = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 512 };
var shWarmupOpt = new Option<int>("--warmup") { Description = "Untimed steps.", DefaultValueFactory = _ => 3 };
var shStepsOpt = new Option<int>("--steps") { Description = "Timed steps (the median is reported).", DefaultValueFactory = _ => 10 };
var shRankOpt = new Option<int>("--lora-rank") { Description = "LoRA rank on every projection.", DefaultValueFactory = _ => 16 };
var shDeviceOpt = new Option<string>("--device") { Description = "cuda (GPU LOCAL_RANK) or cpu.", DefaultValueFactory = _ => "cuda" };
var shOutOpt = new Option<string>("--out") { Description = "JSON written by rank 0.", DefaultValueFactory = _ => "sharding.json" };
var shNoPrefetchOpt = new Option<bool>("--no-prefetch") { Description = "Turn FullyShardOptions.Prefetch off (to measure the overlap it buys)." };
var shardingCmd = new Command("sharding", "Sharded QLoRA training steps of a Llama-like model with random weights; run under bnbrun, one process per GPU.")
{
    shVariantOpt, shPresetOpt, shBatchOpt, shSeqOpt, shWarmupOpt, shStepsOpt, shRankOpt, shDeviceOpt, shOutOpt, shNoPrefetchOpt,
};
shardingCmd.SetAction(r => ShardingBench.Run(new ShardingBenchOptions(r.GetValue(shVariantOpt)!, r.GetValue(shPresetOpt)!, r.GetValue(shBatchOpt),
    r.GetValue(shSeqOpt), r.GetValue(shWarmupOpt), r.GetValue(shStepsOpt), r.GetValue(shRankOpt), r.GetValue(shDeviceOpt)!, r.GetValue(shOutOpt)!, Prefetch: !r.GetValue(shNoPrefetchOpt))));
root.Subcommands.Add(shardingCmd);
var reportDirOpt = new Option<string>("--dir") { Description = "Folder with sharding-{nf4,bf16}-{1,2}gpu.json.", DefaultValueFactory = _ => "." };
var reportOutOpt = new Option<string>("--out") { Description = "Combined JSON.", DefaultValueFactory = _ => "sharding.json" };
var reportCmd = new Command("sharding-report", "Combines the sharding runs of 1 and 2 GPUs into the scaling and memory ratios, and prints the table.") { reportDirOpt, reportOutOpt };
reportCmd.SetAction(r => ShardingReport.Run(r.GetValue(reportDirOpt)!, r.GetValue(reportOutOpt)!));
root.Subcommands.Add(reportCmd);
return root.Parse(args).Invoke();

static string DefaultPath(torch.Device device, string deviceName)
{
    var root = FindRepoRoot() ?? Directory.GetCurrentDirectory();
    var name = device.type == DeviceType.CUDA
        ? "gpu-" + (Regex.Match(deviceName, @"(H100|H200|A100|L40S|L4|A10G|RTX \d+|V100|T4)", RegexOptions.IgnoreCase) is { Success: true } m
            ? m.Value.Replace(" ", string.Empty, StringComparison.Ordinal).ToLowerInvariant()
            : "cuda")
        : $"cpu-{Environment.ProcessorCount}core";
    return Path.Combine(root, "bench", "results", name + ".json");
}

static string? FindRepoRoot()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "BnbDist.sln")))
        {
            return dir.FullName;
        }
    }

    return null;
}

static string CpuModel()
{
    try
    {
        var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
        return line?.Split(':', 2)[1].Trim() ?? "unknown";
    }
    catch (IOException)
    {
        return "unknown";
    }
}
