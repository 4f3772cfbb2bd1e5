using System.Diagnostics;
using BnbDist.Collectives.Nccl;
using BnbDist.Tests;
using static TorchSharp.torch;

namespace BnbDist.Launcher.Tests;

/// <summary>
/// Every collective, checked against a reference by real worker processes under bnbrun, on the backend
/// <c>--backend</c> selects: CPU here, NCCL on a GPU host (skipped with the reason when GPUs or NCCL are missing).
/// </summary>
[Collection("processes")]
public class CollectiveCheckTests
{
    private static int Gpus => cuda.is_available() ? cuda.device_count() : 0;

    private static string NoNcclReason(int needed) => Gpus < needed
        ? $"needs {needed} CUDA GPU(s); this machine has {Gpus}. It runs on the GPU host (bench/gpu/run.sh), which records its summary in bench/results/."
        : $"needs NCCL: {NcclLibrary.LoadError}";

    [Fact]
    public void CpuBackendOnThreeRanksMatchesTheReferenceForEveryCollective()
    {
        // The large case is left out: the CPU ring's large messages are covered by TcpCommunicatorTests, and this machine is small.
        var r = Bnbrun.Run(["--nproc", "3", "--standalone", "--backend", "cpu", Bnbrun.CheckWorker, "--large", "0"]);
        Assert.True(r.ExitCode == 0, r.Output);
        for (var rank = 0; rank < 3; rank++)
        {
            Assert.Contains($"[rank{rank}]: rank {rank}: backend cpu (requested (--backend cpu))", r.Output, StringComparison.Ordinal);
            Assert.Matches($@"\[rank{rank}\]: rank {rank}: \d+ checks passed on cpu", r.Output);
        }
    }

    [Fact]
    public void ACollectiveOneRankNeverJoinsThrowsOnTheOthersWithinTheTimeout()
    {
        var sw = Stopwatch.StartNew();
        var r = Bnbrun.Run(["--nproc", "2", "--standalone", "--backend", "cpu", Bnbrun.CheckWorker, "--timeout-test", "--timeout-s", "4"]);
        Assert.True(r.ExitCode == 7, r.Output); // 7: rank 0 timed out, and the aborted communicator refused the next call
        Assert.Contains("timed out as expected", r.Output, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"took {sw.Elapsed}");
    }

    [Fact]
    public void AutoWithoutGpusPicksTheCpuBackendAndSaysWhy()
    {
        Assert.SkipWhen(Gpus > 0, "this machine has GPUs (auto picks NCCL there; see AutoOnAGpuPicksNccl).");
        var r = Bnbrun.Run(["--nproc", "1", "--standalone", Bnbrun.CheckWorker, "--large", "0"]);
        Assert.True(r.ExitCode == 0, r.Output);
        Assert.Contains("backend cpu (auto: libtorch sees no CUDA device)", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void NcclRequestedWhereItCannotRunIsAClearError()
    {
        Assert.SkipWhen(Gpus > 0 && NcclLibrary.IsAvailable, "NCCL and a GPU are available here (the NCCL tests run instead).");
        var r = Bnbrun.Run(["--nproc", "1", "--standalone", "--backend", "nccl", Bnbrun.CheckWorker]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("BnbDist.Collectives.CollectiveException", r.Output, StringComparison.Ordinal);
        Assert.Contains(NcclLibrary.IsAvailable ? "GPU(s) are visible" : NcclLibrary.PathVariable, r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void NcclOnOneGpuRunsEveryCollective()
    {
        Assert.SkipUnless(Gpus >= 1 && NcclLibrary.IsAvailable, NoNcclReason(1));
        var r = Bnbrun.Run(["--nproc", "1", "--standalone", "--backend", "nccl", Bnbrun.CheckWorker]);
        Assert.True(r.ExitCode == 0, r.Output);
        Assert.Matches(@"\[rank0\]: rank 0: \d+ checks passed on nccl \(cuda:0\)", r.Output);
    }

    [Fact]
    public void AutoOnAGpuPicksNccl()
    {
        Assert.SkipUnless(Gpus >= 1 && NcclLibrary.IsAvailable, NoNcclReason(1));
        var r = Bnbrun.Run(["--nproc", "1", "--standalone", Bnbrun.CheckWorker]);
        Assert.True(r.ExitCode == 0, r.Output);
        Assert.Contains("rank 0: backend nccl (auto: ", r.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void NcclOnTwoGpusMatchesTheReferenceForEveryCollective()
    {
        Assert.SkipUnless(Gpus >= 2 && NcclLibrary.IsAvailable, NoNcclReason(2));
        var r = Bnbrun.Run(["--nproc", "2", "--standalone", "--backend", "nccl", Bnbrun.CheckWorker]);
        Assert.True(r.ExitCode == 0, r.Output);
        Assert.Matches(@"\[rank0\]: rank 0: \d+ checks passed on nccl \(cuda:0\)", r.Output);
        Assert.Matches(@"\[rank1\]: rank 1: \d+ checks passed on nccl \(cuda:1\)", r.Output);
    }

    [Fact]
    public void NcclCollectiveOneRankNeverJoinsAbortsInsteadOfHanging()
    {
        Assert.SkipUnless(Gpus >= 2 && NcclLibrary.IsAvailable, NoNcclReason(2));
        var sw = Stopwatch.StartNew();
        var r = Bnbrun.Run(["--nproc", "2", "--standalone", "--backend", "nccl", Bnbrun.CheckWorker, "--timeout-test", "--timeout-s", "8"]);
        Assert.True(r.ExitCode == 7, r.Output);
        Assert.Contains("timed out as expected", r.Output, StringComparison.Ordinal);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(80), $"took {sw.Elapsed}");
    }
}
