using System.CommandLine;
using System.Globalization;
using BnbDist.Sharding.Checkpoints;

namespace BnbDist.Launcher;

/// <summary>
/// <c>bnbrun checkpoint inspect|verify|reshard|export DIR</c> and <c>import MODEL</c>: offline tools for sharded checkpoints. DIR is a checkpoint
/// folder (<c>step-K</c>) or a root holding several (then the latest complete one is used, and inspect/verify cover all).
/// Exit codes: 0 fine, 1 a checkpoint is damaged or incomplete, 2 bad arguments.
/// </summary>
internal static class CheckpointCommand
{
    public static Command Create()
    {
        var dir = new Argument<string>("dir") { Description = "A checkpoint folder (step-K) or a checkpoint root." };
        var inspect = new Command("inspect", "List the checkpoints of a root (complete or not) and the contents of the latest (or of DIR).") { dir };
        inspect.SetAction(p => Guard(() => Inspect(p.GetValue(dir)!)));

        var verify = new Command("verify", "Read every byte and check every checksum; names each bad file and tensor; exit 1 if any.") { dir };
        verify.SetAction(p => Guard(() => Verify(p.GetValue(dir)!)));

        var to = new Option<int>("--to") { Description = "New world size.", Required = true };
        var reshardOut = new Option<string?>("--out") { Description = "Folder to write (default: DIR-world<N> beside the checkpoint)." };
        var noVerify = new Option<bool>("--no-verify") { Description = "Skip checksum checks while reading." };
        var reshard = new Command("reshard", "Write a copy of the checkpoint for another world size (bytes moved, nothing re-quantized).") { dir, to, reshardOut, noVerify };
        reshard.SetAction(p => Guard(() =>
        {
            var source = Resolve(p.GetValue(dir)!);
            var n = p.GetValue(to);
            if (n < 1)
            {
                Console.Error.WriteLine($"bnbrun checkpoint reshard: --to must be a positive world size; got {n}.");
                return 2;
            }

            var destination = p.GetValue(reshardOut) ?? source.TrimEnd(Path.DirectorySeparatorChar) + $"-world{n}";
            var index = CheckpointResharder.Reshard(source, destination, n, !p.GetValue(noVerify));
            Console.WriteLine($"resharded step {index.Step} from {index.ReshardedFromWorldSize} to {index.WorldSize} ranks: {destination}");
            return 0;
        }));

        var exportOut = new Option<string>("--out") { Description = "The safetensors file to write (--format hf: the model folder).", Required = true };
        var format = new Option<string>("--format") { Description = "safetensors: one file of the full tensors under their own names; hf: a Hugging Face bnb-4bit model folder plus a peft adapter.", DefaultValueFactory = _ => "safetensors" };
        format.AcceptOnlyFromAmong("safetensors", "hf");
        var adapterOut = new Option<string?>("--adapter-out") { Description = "--format hf: the peft adapter folder (default: OUT/adapter)." };
        var maxShard = new Option<long>("--max-shard-bytes") { Description = "--format hf: largest model file before splitting into shards with model.safetensors.index.json.", DefaultValueFactory = _ => 5L << 30 };
        var export = new Command("export", "Write the consolidated full tensors: one safetensors file, or (--format hf) a Hugging Face bnb-4bit model and peft adapter.") { dir, exportOut, format, adapterOut, maxShard, noVerify };
        export.SetAction(p => Guard(() =>
        {
            var source = Resolve(p.GetValue(dir)!);
            var outPath = p.GetValue(exportOut)!;
            if (p.GetValue(format) == "hf")
            {
                var r = HfCheckpointExporter.Export(source, outPath, p.GetValue(adapterOut), p.GetValue(maxShard), !p.GetValue(noVerify));
                Console.WriteLine($"exported {r.ModelTensors} model tensors in {r.ModelFiles} file(s) and {r.AdapterTensors} adapter tensors of {source} to {outPath}");
                return 0;
            }

            var count = CheckpointExporter.Export(source, outPath, !p.GetValue(noVerify));
            Console.WriteLine($"exported {count} tensors of {source} to {outPath}");
            return 0;
        }));

        var hfDir = new Argument<string>("model") { Description = "A Hugging Face bnb-4bit model folder (model.safetensors or a sharded index)." };
        var adapterIn = new Option<string?>("--adapter") { Description = "A peft LoRA adapter folder to import with the model." };
        var importOut = new Option<string>("--out") { Description = "The checkpoint folder to write (e.g. ROOT/step-0).", Required = true };
        var worldSize = new Option<int>("--world-size") { Description = "Ranks to lay the checkpoint out for (any world size loads it).", DefaultValueFactory = _ => 1 };
        var import = new Command("import", "Write a sharded checkpoint from a Hugging Face bnb-4bit model (and peft adapter), bytes unchanged.") { hfDir, adapterIn, importOut, worldSize };
        import.SetAction(p => Guard(() =>
        {
            var n = p.GetValue(worldSize);
            if (n < 1)
            {
                Console.Error.WriteLine($"bnbrun checkpoint import: --world-size must be positive; got {n}.");
                return 2;
            }

            var index = HfCheckpointImporter.Import(p.GetValue(hfDir)!, p.GetValue(adapterIn), p.GetValue(importOut)!, n);
            Console.WriteLine($"imported {index.Tensors.Count} sharded and {index.Replicated.Count} replicated tensors for {n} rank(s): {p.GetValue(importOut)}");
            return 0;
        }));

        return new Command("checkpoint", "Inspect, verify, reshard, export or import sharded checkpoints.") { inspect, verify, reshard, export, import };
    }

    private static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (CheckpointException ex)
        {
            Console.Error.WriteLine($"bnbrun checkpoint: {ex.Message}");
            return 1;
        }
        catch (DirectoryNotFoundException ex)
        {
            Console.Error.WriteLine($"bnbrun checkpoint: {ex.Message}");
            return 2;
        }
    }

    private static bool IsRoot(string dir) =>
        !File.Exists(Path.Combine(dir, CheckpointPaths.IndexFile)) && CheckpointPaths.ParseStepFolder(Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))) is null;

    /// <summary>DIR itself, or the checkpoint a load of root DIR would pick.</summary>
    private static string Resolve(string dir)
    {
        if (!Directory.Exists(dir))
        {
            throw new DirectoryNotFoundException($"no such folder: {dir}");
        }

        if (!IsRoot(dir))
        {
            return dir;
        }

        return CheckpointCatalog.LoadOrder(dir) is [var step, ..]
            ? CheckpointPaths.StepFolder(dir, step)
            : throw new CheckpointException(CheckpointError.Incomplete, dir, null, "no complete checkpoint under this root.");
    }

    private static int Inspect(string dir)
    {
        if (Directory.Exists(dir) && IsRoot(dir))
        {
            var all = CheckpointCatalog.List(dir);
            var pointer = CheckpointCatalog.LatestPointer(dir);
            Console.WriteLine($"root {Path.GetFullPath(dir)}: {all.Count} checkpoint folder(s), latest -> {(pointer is { } p ? CheckpointPaths.StepFolderName(p) : "(none)")}");
            foreach (var c in all)
            {
                Console.WriteLine(c.Index is { } i
                    ? $"  {Path.GetFileName(c.Path)}  complete  world {i.WorldSize}  {i.Tensors.Count} sharded tensors  {Bytes(i.Files.Sum(f => f.Size))}"
                    : $"  {Path.GetFileName(c.Path)}  INCOMPLETE (ignored): {c.Problem}");
            }
        }

        var folder = Resolve(dir);
        var index = CheckpointIndex.Read(folder);
        Console.WriteLine($"checkpoint {folder}");
        Console.WriteLine($"  step {index.Step}, world size {index.WorldSize}{(index.ReshardedFromWorldSize is { } w ? $" (resharded from {w})" : string.Empty)}, " +
            $"library {index.LibraryVersion}, fingerprint '{index.ConfigFingerprint}', created {index.CreatedUtc}");
        Console.WriteLine("  files:");
        foreach (var f in index.Files)
        {
            Console.WriteLine($"    {f.Name}  {f.Size} bytes  {index.ChecksumAlgorithm} {f.Checksum}");
        }

        Console.WriteLine("  sharded tensors (name, dtype, global shape, atoms x units per atom):");
        foreach (var t in index.Tensors)
        {
            Console.WriteLine($"    {t.Name}  {t.DType}  [{string.Join(", ", t.GlobalShape)}]  {t.Atoms} x {t.UnitsPerAtom}");
        }

        Console.WriteLine($"  replicated: {string.Join(", ", index.Replicated.Select(r => $"{r.Name} {r.DType} [{string.Join(", ", r.Shape)}]"))}");
        foreach (var g in index.Extras.GroupBy(e => e.Rank))
        {
            Console.WriteLine($"  extras of rank {g.Key}: {string.Join(", ", g.Select(e => e.Name))}");
        }

        return 0;
    }

    private static int Verify(string dir)
    {
        if (!Directory.Exists(dir))
        {
            throw new DirectoryNotFoundException($"no such folder: {dir}");
        }

        List<string> folders;
        var bad = 0;
        if (IsRoot(dir))
        {
            var all = CheckpointCatalog.List(dir);
            var pointer = CheckpointCatalog.LatestPointer(dir);
            foreach (var c in all.Where(c => !c.IsComplete))
            {
                // An unfinished save is harmless unless the latest pointer names it.
                Console.WriteLine($"{(c.Step == pointer ? "BAD" : "INCOMPLETE (ignored)")}: {c.Problem}");
                bad += c.Step == pointer ? 1 : 0;
            }

            folders = [.. all.Where(c => c.IsComplete).Select(c => c.Path)];
        }
        else
        {
            folders = [dir];
        }

        foreach (var folder in folders)
        {
            var problems = CheckpointVerifier.Verify(folder);
            foreach (var p in problems)
            {
                Console.WriteLine($"BAD: {p.Message}");
            }

            Console.WriteLine(problems.Count == 0 ? $"OK: {folder}" : $"{problems.Count} problem(s) in {folder}");
            bad += problems.Count;
        }

        return bad == 0 ? 0 : 1;
    }

    private static string Bytes(long n) => n.ToString("N0", CultureInfo.InvariantCulture) + " bytes";
}
