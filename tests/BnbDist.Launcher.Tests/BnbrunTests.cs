using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace BnbDist.Launcher.Tests;

/// <summary>Process-level tests run one class at a time: their timing bounds (e.g. stop within 5 s) assume an unloaded machine.</summary>
[CollectionDefinition("processes", DisableParallelization = true)]
public sealed class ProcessesCollection;

/// <summary>bnbrun with real worker processes and sockets: environment, output, failures, exit codes, restarts, kills.</summary>
[Collection("processes")]
public class BnbrunTests
{
    [Fact]
    public void StartsEveryRankWithTorchrunVariablesAndPrefixesTheirOutput()
    {
        var r = Bnbrun.Run(["--nproc", "3", "--standalone", Bnbrun.Worker]);
        Assert.Equal(0, r.ExitCode);
        for (var rank = 0; rank < 3; rank++)
        {
            Assert.Contains($"[rank{rank}]: rank {rank}/3 local {rank} attempt 0: sum 6", r.Output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void AFailingWorkerStopsTheJobWithItsExitCodeAndStackInTheSummary()
    {
        var sw = Stopwatch.StartNew();
        var r = Bnbrun.Run(["--nproc", "3", "--standalone", Bnbrun.Worker, "--fail-rank", "1"]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("rank 1 failed with exit code 1", r.Output, StringComparison.Ordinal);
        Assert.Contains("injected failure on rank 1", r.Output, StringComparison.Ordinal);
        Assert.Contains("System.InvalidOperationException", r.Output, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60));
    }

    [Fact]
    public void TheWorkersExitCodeIsTheLaunchersExitCode()
    {
        var r = Bnbrun.Run(["--nproc", "2", "--standalone", Bnbrun.Worker, "--exit-code", "7"]);
        Assert.Equal(7, r.ExitCode);
    }

    [Fact]
    public void RestartsTheGroupAfterAFailureUpToMaxRestarts()
    {
        var r = Bnbrun.Run(["--nproc", "2", "--standalone", "--max-restarts", "1", Bnbrun.Worker, "--fail-rank", "0", "--fail-once"]);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("Restarting the group", r.Output, StringComparison.Ordinal);
        Assert.Contains("[rank0]: rank 0/2 local 0 attempt 1: sum 3", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void KillingAWorkerWithSigkillEndsTheJobWithinSecondsAndLeavesNoProcesses()
    {
        using var p = Bnbrun.Start(["--nproc", "3", "--standalone", "--log-dir", Path.Combine(Path.GetTempPath(), "bnbrun-kill-" + Guid.NewGuid().ToString("N")), "--tee", Bnbrun.Worker, "--hang-rank", "2"]);
        var pid = p.WaitForLine(new Regex(@"\[rank2\]: pid (\d+)"), TimeSpan.FromSeconds(90));
        var workerPids = p.WorkerPids();
        var sw = Stopwatch.StartNew();
        Process.GetProcessById(pid).Kill(); // SIGKILL
        Assert.True(p.Process.WaitForExit(TimeSpan.FromSeconds(10)), "bnbrun did not exit");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"bnbrun took {sw.Elapsed} to stop after the kill");
        Assert.NotEqual(0, p.Process.ExitCode);
        Assert.All(workerPids, w => Assert.False(IsAlive(w), $"worker {w} still running"));
    }

    [Fact]
    public void SigtermToTheLauncherStopsEveryWorker()
    {
        using var p = Bnbrun.Start(["--nproc", "2", "--standalone", Bnbrun.Worker, "--hang-rank", "1"]);
        p.WaitForLine(new Regex(@"\[rank1\]: pid (\d+)"), TimeSpan.FromSeconds(90));
        var workerPids = p.WorkerPids();
        Bnbrun.Sigterm(p.Process.Id);
        Assert.True(p.Process.WaitForExit(TimeSpan.FromSeconds(20)), "bnbrun did not exit on SIGTERM");
        Assert.All(workerPids, w => Assert.False(IsAlive(w), $"worker {w} still running"));
    }

    [Fact]
    public void AWorkerThatNeverJoinsIsARendezvousTimeoutNotAHang()
    {
        var sw = Stopwatch.StartNew();
        var r = Bnbrun.Run(["--nproc", "3", "--standalone", Bnbrun.Worker, "--absent-rank", "1", "--timeout-s", "3"]);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("rendezvous", r.Output, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"took {sw.Elapsed}");
    }

    [Fact]
    public void TwentyInjectedFaultsInARowNeverHangAndLeaveNoProcesses()
    {
        for (var i = 0; i < 20; i++)
        {
            var failing = i % 3;
            using var p = Bnbrun.Start(["--nproc", "3", "--standalone", Bnbrun.Worker, "--fail-rank", $"{failing}"]);
            var workers = new List<int>();
            var sw = Stopwatch.StartNew();
            while (!p.Process.HasExited && sw.Elapsed < TimeSpan.FromSeconds(60))
            {
                workers.AddRange(p.WorkerPids().Except(workers));
                Thread.Sleep(20);
            }

            Assert.True(p.Process.HasExited, $"fault {i}: bnbrun still running after 60 s");
            Assert.Equal(1, p.Process.ExitCode);
            Assert.All(workers, w => Assert.False(IsAlive(w), $"fault {i}: worker {w} still running"));
        }
    }

    [Fact]
    public void BadArgumentsAreClearErrors()
    {
        Assert.Contains("--nproc must be", Bnbrun.Run(["--nproc", "zero", Bnbrun.Worker]).Output, StringComparison.Ordinal);
        var missing = Bnbrun.Run(["--nproc", "1", "/nonexistent/worker.dll"]);
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("program not found", missing.Output, StringComparison.Ordinal);
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            using var proc = Process.GetProcessById(pid);
            return !proc.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}

/// <summary>Runs the built bnbrun (dotnet bnbrun.dll) against the built test worker.</summary>
internal static partial class Bnbrun
{
    private static readonly string Configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name; // bin/<cfg>/net10.0

    public static string Worker => Built("tests/Workers/CollectiveWorker", "CollectiveWorker.dll");

    public static string LauncherPath => Built("launcher", "bnbrun.dll");

    public static (int ExitCode, string Output) Run(string[] args)
    {
        using var p = Start(args);
        if (!p.Process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Process.Kill(true);
            throw new TimeoutException("bnbrun did not finish: " + p.Output);
        }

        p.Process.WaitForExit();
        return (p.Process.ExitCode, p.Output);
    }

    public static Running Start(string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(LauncherPath);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return new Running(Process.Start(psi)!);
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int sig);

    public static void Sigterm(int pid) => _ = Kill(pid, 15);

    private static string Built(string project, string file)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, project, "bin", Configuration, "net10.0", file);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException($"{file} not built (expected under {project}/bin/{Configuration}/net10.0).");
    }

    internal sealed class Running : IDisposable
    {
        private readonly StringBuilder output = new();

        public Running(Process process)
        {
            Process = process;
            process.OutputDataReceived += (_, e) => Append(e.Data);
            process.ErrorDataReceived += (_, e) => Append(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public string Output
        {
            get
            {
                lock (output)
                {
                    return output.ToString();
                }
            }
        }

        public int WaitForLine(Regex pattern, TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (DateTime.UtcNow < deadline)
            {
                var m = pattern.Match(Output);
                if (m.Success)
                {
                    return int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                }

                Thread.Sleep(50);
            }

            throw new TimeoutException($"no line matching {pattern} in: {Output}");
        }

        /// <summary>The launcher's child processes (its workers), from /proc.</summary>
        public List<int> WorkerPids() =>
            [.. Directory.GetDirectories("/proc").Select(d => int.TryParse(Path.GetFileName(d), out var pid) ? pid : -1)
                .Where(pid => pid > 0 && ParentOf(pid) == Process.Id)];

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill(true);
            }

            Process.Dispose();
        }

        private static int ParentOf(int pid)
        {
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var afterName = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                return int.Parse(afterName[1], System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                return -1;
            }
        }

        private void Append(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(line);
            }
        }
    }
}
