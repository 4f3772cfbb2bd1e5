// Worker for the checkpoint tests.
//   crash ROOT STEP WORLD KILL   saves the test state of STEP with WORLD ranks (threads, real TCP communicators) and
//                                SIGKILLs itself at KILL: "stage:NAME" (a named save stage), "bytes:FILE:N" (once N
//                                bytes of FILE are written) or "none"
//   save ROOT STEP [--async]     under bnbrun: collective save of the test state of STEP
//   load ROOT STEP               under bnbrun: collective load of the latest checkpoint, checked against STEP's state
using System.Globalization;
using System.Runtime.InteropServices;
using BnbDist.Collectives;
using BnbDist.Sharding.Checkpoints;
using BnbDist.Sharding.Tests.Checkpoints;

var root = args[1];
var step = long.Parse(args[2], CultureInfo.InvariantCulture);
switch (args[0])
{
    case "crash":
        return Crash(int.Parse(args[3], CultureInfo.InvariantCulture), args[4]);
    case "save":
    case "load":
        return DistributedEnvironment.RunWorker(env =>
        {
            var (store, comm) = env.InitProcessGroup(TimeSpan.FromSeconds(30));
            using (store)
            using (comm)
            {
                using var ckpt = new ShardedCheckpointer(root, comm, new CheckpointSaveOptions { ConfigFingerprint = "test-config", KeepLast = 2 });
                if (args[0] == "save")
                {
                    var state = CheckpointTestData.State(step, env.Rank, env.WorldSize);
                    var folder = args.Contains("--async") ? ckpt.SaveAsync(step, state).GetAwaiter().GetResult() : ckpt.Save(step, state);
                    Console.WriteLine($"rank {env.Rank} saved {folder}");
                    return 0;
                }

                using var loaded = ckpt.Load(new CheckpointLoadOptions { ExpectedFingerprint = "test-config" });
                var diff = CheckpointTestData.Difference(loaded, step);
                Console.WriteLine(diff is null ? $"rank {env.Rank} loaded step {loaded.Step}: identical" : $"rank {env.Rank}: {diff}");
                return diff is null ? 0 : 3;
            }
        });
    default:
        Console.Error.WriteLine($"unknown mode {args[0]}");
        return 2;
}

int Crash(int world, string kill)
{
    var parts = kill.Split(':');
    if (parts[0] == "stage")
    {
        var stage = kill["stage:".Length..];
        CheckpointFaults.OnStage = s =>
        {
            if (s == stage)
            {
                Die();
            }
        };
    }
    else if (parts[0] == "bytes")
    {
        var limit = long.Parse(parts[2], CultureInfo.InvariantCulture);
        CheckpointFaults.OnBytes = (file, written) =>
        {
            if (file == parts[1] && written >= limit)
            {
                Die();
            }
        };
    }

    var errors = RankThreads.Run(world, comm =>
    {
        using var ckpt = new ShardedCheckpointer(root, comm, new CheckpointSaveOptions { KeepLast = 1 });
        return ckpt.Save(step, CheckpointTestData.State(step, comm?.Rank ?? 0, world));
    }).Where(r => r.Error is not null).Select(r => r.Error!).ToList();
    errors.ForEach(e => Console.Error.WriteLine(e));
    Console.WriteLine(errors.Count == 0 ? "save completed" : "save failed");
    return errors.Count == 0 ? 0 : 1;
}

static void Die()
{
    Console.Out.Flush();
    _ = Kill(Environment.ProcessId, 9);
    Thread.Sleep(Timeout.Infinite);
}

[DllImport("libc", EntryPoint = "kill")]
static extern int Kill(int pid, int sig);
