using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using BnbDist.Sharding;
using BnbDist.Sharding.Checkpoints;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>
/// Sharded-checkpoint throughput against the disk's raw sequential bandwidth in the same run: a QLoRA-like state (packed
/// 4-bit weights as u8 and their f32 absmax, 1/8 of the bytes) saved, loaded on the same world size, loaded resharded
/// to two ranks, loaded into existing slices, verified, and saved asynchronously (time until training may go on, and
/// until committed). Reads are cold: the
/// files' pages are dropped from the page cache first.
/// </summary>
internal sealed class CheckpointBench(string folder, long totalBytes, int repeats)
{
    private const int Tensors = 8;

    public JsonObject Run(string device)
    {
        Directory.CreateDirectory(folder);
        var root = Path.Combine(folder, "ckpt");
        var raw = Path.Combine(folder, "raw.bin");
        var perTensor = totalBytes / Tensors * 8 / 9; // packed bytes; absmax adds 1/8 of them
        var state = MakeState(perTensor);
        var bytes = state.Sharded.Sum(s => s.Local.numel() * s.Local.element_size());
        var rows = new JsonArray();
        try
        {
            var rawWrite = Median(() => DiskBandwidth.Write(raw, bytes));
            var rawRead = Median(() => DiskBandwidth.Read(raw));
            File.Delete(raw);
            Console.WriteLine($"raw disk: write {Gbps(bytes, rawWrite):F2} GB/s, read {Gbps(bytes, rawRead):F2} GB/s ({bytes / 1e9:F2} GB)");

            // Fresh host memory costs page faults (slow on some VMs); a load allocates its tensors, so this is its floor.
            var touch = Median(() => Time(() => state.Sharded.Select(s => empty_like(s.Local).fill_(1)).ToList().ForEach(t => t.Dispose())));
            Add(rows, "host_alloc_and_touch", bytes, touch, rawRead, "reference: allocating and writing fresh host tensors of the checkpoint's size (no disk)");

            // KeepLast = 0: deleting the previous checkpoint is housekeeping, kept out of the timed saves.
            using var ckpt = new ShardedCheckpointer(root, null, new CheckpointSaveOptions { KeepLast = 0 });
            long step = 0;
            var save = Median(() =>
            {
                Prune(root, step);
                return Time(() => ckpt.Save(++step, state));
            });
            Add(rows, "checkpoint_save_world1", bytes, save, rawWrite, "collective save on 1 rank: rank file + replicated, XXH3 while writing, fsync, rename, index, latest");

            var load = Median(() => Time(() => Cold(root, () => ckpt.Load().Dispose())));
            Add(rows, "checkpoint_load_world1_verified", bytes, load, rawRead, "cold load on the saving world size, every slice checked against its checksum");
            var loadFast = Median(() => Time(() => Cold(root, () => ckpt.Load(new CheckpointLoadOptions { VerifyChecksums = false }).Dispose())));
            Add(rows, "checkpoint_load_world1_unverified", bytes, loadFast, rawRead, "cold load without checksum checks");

            var into = Median(() => Time(() => Cold(root, () => ckpt.Load(into: state.Sharded).Dispose())));
            Add(rows, "checkpoint_load_world1_into_existing_verified", bytes, into, rawRead, "cold load into the existing (already touched) slices, as FullyShard would, checksums checked");

            var reshard = Median(() => Time(() => Cold(root, () => ReadResharded(CheckpointPaths.StepFolder(root, step), 2))));
            Add(rows, "checkpoint_load_resharded_1to2_verified", bytes, reshard, rawRead, "cold: both ranks' new slices (2-rank layout) read from the 1-rank checkpoint by byte ranges, in one process");

            var verify = Median(() => Time(() => Cold(root, () => CheckpointVerifier.ThrowIfInvalid(CheckpointPaths.StepFolder(root, step)))));
            Add(rows, "checkpoint_verify", bytes, verify, rawRead, "cold: every byte read, file and tensor checksums");

            var stall = new List<double>();
            var async = Median(() =>
            {
                Prune(root, step);
                var sw = Stopwatch.StartNew();
                var task = ckpt.SaveAsync(++step, state);
                stall.Add(sw.Elapsed.TotalSeconds);
                task.GetAwaiter().GetResult();
                return sw.Elapsed.TotalSeconds;
            });
            Add(rows, "checkpoint_save_async_total", bytes, async, rawWrite, "async save until committed (host copy + write), median");
            Add(rows, "checkpoint_save_async_stall_first", bytes, stall[0], rawWrite, "first async save: time until SaveAsync returns (host copy into fresh buffers)");
            if (stall.Count > 1)
            {
                // Only later saves reuse the kept host buffers: a single repeat has none.
                Add(rows, "checkpoint_save_async_stall_reused", bytes, Median(stall.Skip(1).ToList()), rawWrite, "later async saves: time until SaveAsync returns (copy into the kept host buffers)");
            }

            return new JsonObject
            {
                ["device"] = device,
                ["disk"] = Disk(folder),
                ["checkpoint_bytes"] = bytes,
                ["tensors"] = $"{Tensors} u8 tensors of {perTensor} bytes + {Tensors} f32 absmax of {perTensor / 32} elements",
                ["raw_write_gbps"] = Math.Round(Gbps(bytes, rawWrite), 3),
                ["raw_read_gbps"] = Math.Round(Gbps(bytes, rawRead), 3),
                ["repeats"] = repeats,
                ["measured_at"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture),
                ["results"] = rows,
            };
        }
        finally
        {
            foreach (var s in state.Sharded)
            {
                s.Local.Dispose();
            }

            Directory.Delete(folder, recursive: true);
        }
    }

    public static void Write(string path, JsonObject doc)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    private static CheckpointState MakeState(long perTensor)
    {
        var layout = ShardLayout.ForLength(perTensor, 32, 1); // 32 packed bytes = one 64-element 4-bit block
        var sharded = new List<ShardedTensor>();
        for (var i = 0; i < Tensors; i++)
        {
            sharded.Add(new ShardedTensor($"layers.{i}.weight", randint(0, 256, [perTensor], ScalarType.Byte), [perTensor], layout, 32, 0));
            sharded.Add(new ShardedTensor($"layers.{i}.weight.absmax", rand(layout.Atoms), [layout.Atoms], layout, 1, 0));
        }

        return new CheckpointState(sharded, new Dictionary<string, Tensor> { ["code"] = linspace(-1, 1, 16) });
    }

    private static void Prune(string root, long keep)
    {
        foreach (var c in CheckpointCatalog.List(root).Where(c => c.Step != keep))
        {
            Directory.Delete(c.Path, recursive: true);
        }
    }

    private static void ReadResharded(string folder, int world)
    {
        using var f = CheckpointFolder.Open(folder);
        for (var rank = 0; rank < world; rank++)
        {
            foreach (var t in f.Index.Tensors)
            {
                f.ReadShard(t.Name, rank, world).Local.Dispose();
            }
        }
    }

    private static void Cold(string root, Action read)
    {
        DiskBandwidth.DropFolderFromPageCache(root);
        read();
    }

    private static double Time(Action a)
    {
        var sw = Stopwatch.StartNew();
        a();
        return sw.Elapsed.TotalSeconds;
    }

    private static double Gbps(long bytes, double seconds) => bytes / seconds / 1e9;

    private static double Median(List<double> xs)
    {
        xs.Sort();
        return xs.Count % 2 == 1 ? xs[xs.Count / 2] : (xs[(xs.Count / 2) - 1] + xs[xs.Count / 2]) / 2;
    }

    private static string Disk(string folder)
    {
        try
        {
            var full = Path.GetFullPath(folder);
            var mounts = File.ReadAllLines("/proc/mounts").Select(l => l.Split(' ')).Where(p => p.Length > 2 && full.StartsWith(p[1], StringComparison.Ordinal));
            var m = mounts.OrderByDescending(p => p[1].Length).First();
            return $"{m[0]} on {m[1]} ({m[2]})";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private double Median(Func<double> run) => Median([.. Enumerable.Range(0, repeats).Select(_ => run())]);

    private void Add(JsonArray rows, string name, long bytes, double seconds, double rawSeconds, string note)
    {
        var row = new JsonObject
        {
            ["name"] = name,
            ["seconds"] = Math.Round(seconds, 3),
            ["gbps"] = Math.Round(Gbps(bytes, seconds), 3),
            ["pct_of_raw_disk"] = Math.Round(100 * rawSeconds / seconds, 1),
            ["bytes"] = bytes,
            ["note"] = note,
        };
        rows.Add(row);
        Console.WriteLine($"{name}: {seconds:F2} s, {Gbps(bytes, seconds):F2} GB/s ({100 * rawSeconds / seconds:F0} % of raw disk)");
    }
}
