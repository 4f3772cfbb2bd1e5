using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace BnbDist.Launcher;

/// <summary>The outcome of one attempt: success, or the first failing worker with its exit code and error record.</summary>
internal sealed record GroupResult(bool Success, int FailedRank, int ExitCode, string? Error);

/// <summary>One rendezvous round's worker processes on this node: started together, watched, stopped together.</summary>
internal sealed class WorkerGroup : IDisposable
{
    private readonly LaunchOptions options;
    private readonly RoundInfo round;
    private readonly ILogger logger;
    private readonly List<(int Rank, Process Process, string ErrorFile, StreamWriter? Log)> workers = [];
    private readonly object consoleLock = new();

    public WorkerGroup(LaunchOptions options, RoundInfo round, ILogger logger)
    {
        this.options = options;
        this.round = round;
        this.logger = logger;
    }

    public void Start()
    {
        var attemptDir = Path.Combine(options.LogDir ?? Path.Combine(Path.GetTempPath(), "bnbrun", options.RunId), $"attempt_{round.Round}");
        for (var local = 0; local < options.NProcPerNode; local++)
        {
            var rank = (round.NodeRank * options.NProcPerNode) + local;
            var rankDir = Path.Combine(attemptDir, $"rank_{rank}");
            Directory.CreateDirectory(rankDir);
            var errorFile = Path.Combine(rankDir, "error.json");
            File.Delete(errorFile);
            var psi = StartInfo(rank, local, errorFile);
            var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
            StreamWriter? log = options.LogDir is null ? null : new StreamWriter(Path.Combine(rankDir, "output.log")) { AutoFlush = true };
            var prefix = $"[rank{rank}]:";
            process.OutputDataReceived += (_, e) => Forward(prefix, e.Data, log, error: false);
            process.ErrorDataReceived += (_, e) => Forward(prefix, e.Data, log, error: true);
            if (!process.Start())
            {
                throw new InvalidOperationException($"could not start {psi.FileName}");
            }

            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            workers.Add((rank, process, errorFile, log));
        }

        logger.LogInformation("Started {Count} worker(s), ranks {First}..{Last} of {World}, attempt {Attempt}.",
            workers.Count, workers[0].Rank, workers[^1].Rank, WorldSize, round.Round);
    }

    private int WorldSize => round.NNodes * options.NProcPerNode;

    /// <summary>Waits until every worker succeeded, or one failed (the caller reports it, then stops the others).</summary>
    public async Task<GroupResult> WaitAsync(CancellationToken ct)
    {
        var pending = workers.ToDictionary(w => w.Process.WaitForExitAsync(ct), w => w);
        while (pending.Count > 0)
        {
            var done = await Task.WhenAny(pending.Keys).ConfigureAwait(false);
            var w = pending[done];
            pending.Remove(done);
            await done.ConfigureAwait(false); // throws if cancelled
            w.Process.WaitForExit(); // flush redirected output
            if (w.Process.ExitCode != 0)
            {
                var error = ReadError(w.ErrorFile);
                logger.LogError("Rank {Rank} exited with code {Code}; stopping the other workers.", w.Rank, w.Process.ExitCode);
                return new GroupResult(false, w.Rank, w.Process.ExitCode, error);
            }
        }

        return new GroupResult(true, -1, 0, null);
    }

    /// <summary>SIGTERM to every live worker, then SIGKILL (whole process tree) after the grace period.</summary>
    public async Task StopAsync()
    {
        var live = workers.Where(w => !HasExited(w.Process)).ToList();
        foreach (var w in live)
        {
            Posix.Terminate(w.Process.Id);
        }

        var deadline = DateTime.UtcNow + options.GracePeriod;
        foreach (var w in live)
        {
            var remaining = deadline - DateTime.UtcNow;
            if (remaining > TimeSpan.Zero)
            {
                using var cts = new CancellationTokenSource(remaining);
                try
                {
                    await w.Process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }

            if (!HasExited(w.Process))
            {
                w.Process.Kill(entireProcessTree: true);
                w.Process.WaitForExit(2000);
            }
        }
    }

    public void Dispose()
    {
        foreach (var w in workers)
        {
            if (!HasExited(w.Process))
            {
                w.Process.Kill(entireProcessTree: true);
            }

            w.Process.Dispose();
            w.Log?.Dispose();
        }
    }

    private ProcessStartInfo StartInfo(int rank, int local, string errorFile)
    {
        var isDll = options.Program.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var psi = new ProcessStartInfo(isDll ? DotnetHost() : options.Program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (isDll)
        {
            psi.ArgumentList.Add(options.Program);
        }

        foreach (var a in options.ProgramArgs)
        {
            psi.ArgumentList.Add(a);
        }

        string Str(int v) => v.ToString(CultureInfo.InvariantCulture);
        psi.Environment["RANK"] = Str(rank);
        psi.Environment["LOCAL_RANK"] = Str(local);
        psi.Environment["WORLD_SIZE"] = Str(WorldSize);
        psi.Environment["LOCAL_WORLD_SIZE"] = Str(options.NProcPerNode);
        psi.Environment["GROUP_RANK"] = Str(round.NodeRank);
        psi.Environment["NODE_RANK"] = Str(round.NodeRank);
        psi.Environment["GROUP_WORLD_SIZE"] = Str(round.NNodes);
        psi.Environment["ROLE_RANK"] = Str(rank);
        psi.Environment["MASTER_ADDR"] = options.MasterAddr;
        psi.Environment["MASTER_PORT"] = Str(options.MasterPort);
        // Every new round follows a failure somewhere in the job, so the round number is the job-wide restart count.
        psi.Environment["TORCHELASTIC_RESTART_COUNT"] = Str(round.Round);
        psi.Environment["TORCHELASTIC_MAX_RESTARTS"] = Str(options.MaxRestarts);
        psi.Environment["TORCHELASTIC_RUN_ID"] = options.RunId;
        psi.Environment["TORCHELASTIC_ERROR_FILE"] = errorFile;
        psi.Environment["BNBDIST_BACKEND"] = options.Backend;
        psi.Environment["NCCL_NVLS_ENABLE"] = "0";
        // Workers exit when this agent dies (even by SIGKILL), instead of lingering as orphans: see AgentWatchdog.
        psi.Environment["BNBDIST_AGENT_PID"] = Str(Environment.ProcessId);
        return psi;
    }

    private static string DotnetHost() =>
        Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    private void Forward(string prefix, string? line, StreamWriter? log, bool error)
    {
        if (line is null)
        {
            return;
        }

        log?.WriteLine(line);
        if (log is not null && !options.Tee)
        {
            return;
        }

        lock (consoleLock)
        {
            (error ? Console.Error : Console.Out).WriteLine($"{prefix} {line}");
        }
    }

    private static string? ReadError(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return doc.RootElement.TryGetProperty("stack", out var s) ? s.GetString() : File.ReadAllText(path);
        }
        catch (JsonException)
        {
            return File.ReadAllText(path);
        }
    }

    private static bool HasExited(Process p)
    {
        try
        {
            return p.HasExited;
        }
        catch (InvalidOperationException)
        {
            return true;
        }
    }
}
