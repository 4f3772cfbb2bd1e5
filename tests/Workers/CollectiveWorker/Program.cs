// Test worker for bnbrun: joins the group, all-reduces rank+1, and misbehaves on request:
//   --fail-rank R        rank R throws before joining (on the first attempt only with --fail-once)
//   --fail-marker PATH   with --fail-rank: fail only while PATH does not exist (the failure creates it), on any attempt
//   --exit-code C        rank 0 exits with C after the collective
//   --hang-rank R        rank R prints its pid and sleeps inside the job (to be killed)
//   --sleep-ms N         every rank sleeps N ms after the all-reduce (a job that runs a while)
//   --timeout-s N        time limit for joining the group (default 30)
//   --absent-rank R      rank R exits successfully without ever joining (a worker that never shows up)
using BnbDist.Collectives;
using static TorchSharp.torch;

int Arg(string name, int fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
}

return DistributedEnvironment.RunWorker(env =>
{
    var marker = Array.IndexOf(args, "--fail-marker") is var m and >= 0 ? args[m + 1] : null;
    if (Arg("--fail-rank", -1) == env.Rank && (!args.Contains("--fail-once") || env.RestartCount == 0) && (marker is null || !File.Exists(marker)))
    {
        if (marker is not null)
        {
            File.WriteAllText(marker, $"failed once on rank {env.Rank}");
        }

        throw new InvalidOperationException($"injected failure on rank {env.Rank} (attempt {env.RestartCount})");
    }

    if (Arg("--absent-rank", -1) == env.Rank)
    {
        return 0;
    }

    var (store, comm) = env.InitProcessGroup(TimeSpan.FromSeconds(Arg("--timeout-s", 30)));
    using (store)
    using (comm)
    {
        using var t = full(4, env.Rank + 1f);
        comm.AllReduce(t);
        Console.WriteLine($"rank {env.Rank}/{env.WorldSize} local {env.LocalRank} attempt {env.RestartCount}: sum {t[0].item<float>()}");
        Thread.Sleep(Arg("--sleep-ms", 0));
        if (Arg("--hang-rank", -1) == env.Rank)
        {
            Console.WriteLine($"pid {Environment.ProcessId}");
            Thread.Sleep(Timeout.Infinite);
        }

        comm.Barrier();
    }

    return env.Rank == 0 ? Arg("--exit-code", 0) : 0;
});
