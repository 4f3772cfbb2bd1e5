using System.Text.Json;
using System.Text.Json.Nodes;
using BnbDist.Backends.Interop;
using BnbDist.Collectives;
using BnbDist.Collectives.Nccl;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>
/// Bus bandwidth of BnbDist's NCCL all-reduce, all-gather and reduce-scatter (f32, 1 MB..1 GB), measured like
/// nccl-tests: <c>iters</c> async collectives back to back between two CUDA events on the default stream, median of
/// <c>reps</c> such runs after a warm-up; size = the larger buffer (all-reduce: the tensor; all-gather: the output;
/// reduce-scatter: the input); bus bandwidth = size / time x 2(n-1)/n for all-reduce, (n-1)/n for the other two.
/// Runs as a worker under bnbrun (one process per GPU); rank 0 writes the JSON.
/// bench/gpu/nccl_torch.py measures torch.distributed the same way.
/// </summary>
internal static class NcclBench
{
    public static int Run(string outPath, long minBytes, long maxBytes, int iters, int reps) => DistributedEnvironment.RunWorker(env =>
    {
        var (store, comm) = (env with { Backend = "nccl" }).InitProcessGroup(TimeSpan.FromMinutes(2));
        using (store)
        using (comm)
        {
            var nccl = (NcclCommunicator)comm;
            var w = comm.WorldSize;
            var rows = new JsonArray();
            using var timer = new CudaEventTimer();
            foreach (var op in new[] { "all_reduce", "all_gather", "reduce_scatter" })
            {
                for (var bytes = minBytes; bytes <= maxBytes; bytes *= 2)
                {
                    var n = bytes / 4 / w * w;
                    using var big = randn(n, device: nccl.Device);
                    using var small = randn(n / w, device: nccl.Device);
                    Func<Task> issue = op switch
                    {
                        "all_reduce" => () => comm.AllReduceAsync(big),
                        "all_gather" => () => comm.AllGatherAsync(big, small),
                        _ => () => comm.ReduceScatterAsync(small, big),
                    };
                    var times = new double[reps];
                    Task last = Task.CompletedTask;
                    for (var i = 0; i < 5; i++)
                    {
                        last = issue();
                    }

                    last.GetAwaiter().GetResult();
                    for (var r = 0; r < reps; r++)
                    {
                        times[r] = timer.Time(() =>
                        {
                            for (var i = 0; i < iters; i++)
                            {
                                last = issue();
                            }
                        }) / iters;
                        last.GetAwaiter().GetResult();
                    }

                    Array.Sort(times);
                    var ms = Timing.Median(times);
                    var algbw = n * 4.0 / (ms * 1e-3) / 1e9;
                    var factor = op == "all_reduce" ? 2.0 * (w - 1) / w : (w - 1.0) / w;
                    rows.Add(new JsonObject
                    {
                        ["op"] = op,
                        ["bytes"] = n * 4,
                        ["time_us"] = Math.Round(ms * 1e3, 2),
                        ["algbw_gbps"] = Math.Round(algbw, 2),
                        ["busbw_gbps"] = Math.Round(algbw * factor, 2),
                    });
                    if (comm.Rank == 0)
                    {
                        Console.WriteLine($"{op,-15} {n * 4,12} B {ms * 1e3,10:F1} us  algbw {algbw,8:F1} GB/s  busbw {algbw * factor,8:F1} GB/s");
                    }
                }
            }

            if (comm.Rank == 0)
            {
                var doc = new JsonObject
                {
                    ["impl"] = "bnbdist",
                    ["device"] = CudaRuntime.DeviceName(nccl.DeviceIndex),
                    ["world_size"] = w,
                    ["nccl"] = NcclLibrary.FormatVersion(NcclLibrary.Version),
                    ["nccl_path"] = NcclLibrary.LoadedPath,
                    ["iters"] = iters,
                    ["reps"] = reps,
                    ["dtype"] = "float32",
                    ["rows"] = rows,
                };
                Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
                File.WriteAllText(outPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
                Console.WriteLine($"wrote {outPath}");
            }
        }

        return 0;
    });
}
