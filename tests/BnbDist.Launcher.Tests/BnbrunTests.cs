using System.Diagnostics;
using System.Text.RegularExpressions;
using BnbDist.Tests;

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
        Assert.All(workerPids, w => Assert.False(Bnbrun.IsAlive(w), $"worker {w} still running"));
    }

    [Fact]
    public void SigtermToTheLauncherStopsEveryWorker()
    {
        using var p = Bnbrun.Start(["--nproc", "2", "--standalone", Bnbrun.Worker, "--hang-rank", "1"]);
        p.WaitForLine(new Regex(@"\[rank1\]: pid (\d+)"), TimeSpan.FromSeconds(90));
        var workerPids = p.WorkerPids();
        Bnbrun.Sigterm(p.Process.Id);
        Assert.True(p.Process.WaitForExit(TimeSpan.FromSeconds(20)), "bnbrun did not exit on SIGTERM");
        Assert.All(workerPids, w => Assert.False(Bnbrun.IsAlive(w), $"worker {w} still running"));
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
            Assert.All(workers, w => Assert.False(Bnbrun.IsAlive(w), $"fault {i}: worker {w} still running"));
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
}
