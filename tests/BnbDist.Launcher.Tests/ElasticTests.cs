using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using BnbDist.Tests;

namespace BnbDist.Launcher.Tests;

/// <summary>
/// Elastic rendezvous (<c>--nnodes MIN:MAX</c>) and cross-node restarts with real agents: several bnbrun processes on
/// this machine share one store on loopback (the first to bind <c>--master-port</c> hosts it and is node 0).
/// </summary>
[Collection("processes")]
public sealed class ElasticTests
{
    private static readonly Regex StoreUp = new(@"Store listening on [^:]+:(\d+)");

    [Fact]
    public void OneAgentOfOneToTwoStartsAloneAfterTheLastCall()
    {
        var sw = Stopwatch.StartNew();
        var r = Bnbrun.Run([.. Agent(FreePort(), lastCall: 2), Bnbrun.Worker]);
        Assert.True(r.ExitCode == 0, r.Output);
        Assert.Contains("Rendezvous round 0 closed with 1 node(s) (--nnodes 1:2)", r.Output, StringComparison.Ordinal);
        Assert.Contains("[rank0]: rank 0/2 local 0 attempt 0: sum 3", r.Output, StringComparison.Ordinal);
        Assert.Contains("[rank1]: rank 1/2 local 1 attempt 0: sum 3", r.Output, StringComparison.Ordinal);
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(2), $"the round closed before the last call ({sw.Elapsed})");
    }

    [Fact]
    public void TwoAgentsOfOneToTwoFormOneWorldOfBothNodesRanks()
    {
        var sw = Stopwatch.StartNew();
        using var nodes = RunTwoNodes([Bnbrun.Worker]);
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        Assert.True(node0.Process.ExitCode == 0, node0.Output);
        Assert.True(node1.Process.ExitCode == 0, node1.Output);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(25), $"MAX nodes joined but the round waited for the last call ({sw.Elapsed})");
        Assert.Contains("Rendezvous round 0 closed with 2 node(s)", node0.Output, StringComparison.Ordinal);
        Assert.Contains("Joined rendezvous round 0 as node 1 of 2.", node1.Output, StringComparison.Ordinal);
        // 2 nodes x 2 workers: ranks 0..3, all-reduce of rank+1 = 10.
        AssertFourRanks(node0, node1, attempt: 0);
    }

    [Fact]
    public void ANodeArrivingAfterTheRoundClosedWaitsAndLeavesWhenTheJobEnds()
    {
        var port = FreePort();
        string[] job = [Bnbrun.Worker, "--sleep-ms", "4000"];
        using var nodes = StartNodes([.. Agent(port, lastCall: 30), .. job], [.. Agent(port, lastCall: 30), .. job]);
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        node0.WaitForLine(new Regex(@"Rendezvous round (\d+) closed with 2 node"), TimeSpan.FromSeconds(30));
        using var late = Bnbrun.Start([.. Agent(port, lastCall: 30), .. job]);
        WaitBoth(node0, node1);
        Assert.True(late.Process.WaitForExit(TimeSpan.FromSeconds(30)), late.Output);
        late.Process.WaitForExit();
        Assert.True(node0.Process.ExitCode == 0, node0.Output);
        Assert.True(late.Process.ExitCode == 0, late.Output);
        Assert.Contains("Rendezvous round 0 closed with 2 node(s) before this node joined; waiting for the next round.", late.Output, StringComparison.Ordinal);
        Assert.Contains("The job finished while this node waited to join", late.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("[rank", late.Output, StringComparison.Ordinal); // it started no workers
        AssertFourRanks(node0, node1, attempt: 0);
    }

    [Fact]
    public void AWorkerFailingOnNodeOneRestartsBothNodesAndTheJobSucceeds()
    {
        var marker = Path.Combine(Path.GetTempPath(), "bnbrun-elastic-" + Guid.NewGuid().ToString("N"));
        using var nodes = RunTwoNodes(["--max-restarts", "1", Bnbrun.Worker, "--fail-rank", "2", "--fail-marker", marker]);
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        Assert.True(node0.Process.ExitCode == 0, node0.Output + node1.Output);
        Assert.True(node1.Process.ExitCode == 0, node0.Output + node1.Output);
        Assert.True(File.Exists(marker), "rank 2 never failed");
        File.Delete(marker);
        // Node 0's workers were healthy but were stopped and restarted with node 1's.
        Assert.Contains("Round 0 failed elsewhere (rank 2 failed with exit code 1 on node 1", node0.Output, StringComparison.Ordinal);
        foreach (var node in new[] { node0, node1 })
        {
            Assert.Contains("Restarting the group", node.Output, StringComparison.Ordinal);
            Assert.Contains("rendezvous round 1", node.Output, StringComparison.OrdinalIgnoreCase);
        }

        // TORCHELASTIC_RESTART_COUNT is 1 on every rank of the second attempt.
        AssertFourRanks(node0, node1, attempt: 1);
    }

    [Fact]
    public void WithoutRestartsLeftEveryNodeExitsWithTheFailingWorkersCode()
    {
        using var nodes = RunTwoNodes([Bnbrun.Worker, "--fail-rank", "3"]);
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        Assert.True(node0.Process.ExitCode == 1, node0.Output);
        Assert.True(node1.Process.ExitCode == 1, node1.Output);
        Assert.Contains("Job failed after 1 attempt(s): rank 3 failed with exit code 1 on node 1", node0.Output, StringComparison.Ordinal);
        Assert.Contains("injected failure on rank 3", node0.Output, StringComparison.Ordinal); // node 1's stack reaches node 0's summary
    }

    [Fact]
    public void KillingNodeOnesAgentLetsNodeZeroGoOnAloneAndLeavesNoWorkers()
    {
        // MIN = 1: node 0 restarts alone (rank 1's hang does not exist in a world of 1).
        using var nodes = StartWithHangingRankOne();
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        var orphans = node1.WorkerPids();
        Assert.NotEmpty(orphans);
        var sw = Stopwatch.StartNew();
        node1.Process.Kill(); // SIGKILL of the agent alone: its workers are not killed with it
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromSeconds(30)), node0.Output);
        node0.Process.WaitForExit();
        Assert.True(node0.Process.ExitCode == 0, node0.Output);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"node 0 took {sw.Elapsed} to finish alone");
        Assert.Contains("Rendezvous round 1 closed with 1 node(s)", node0.Output, StringComparison.Ordinal);
        Assert.Contains("[rank0]: rank 0/1 local 0 attempt 1: sum 1", node0.Output, StringComparison.Ordinal);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (orphans.Any(Bnbrun.IsAlive) && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(100);
        }

        Assert.All(orphans, w => Assert.False(Bnbrun.IsAlive(w), $"node 1's worker {w} outlived its agent"));
    }

    [Fact]
    public void AnAgentThatStopsHeartbeatingIsDeclaredDeadAndTheOthersGoOn()
    {
        // SIGSTOP freezes node 1's agent but not its workers, so no worker fails: only the missing heartbeat can end
        // round 0 (rank 0 waits for the hanging rank 1 in a barrier with a 30 s timeout).
        using var nodes = StartWithHangingRankOne();
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        var sw = Stopwatch.StartNew();
        Bnbrun.Signal(node1.Process.Id, 19); // SIGSTOP
        try
        {
            Assert.True(node0.Process.WaitForExit(TimeSpan.FromSeconds(30)), node0.Output);
            node0.Process.WaitForExit();
        }
        finally
        {
            node1.Process.Kill(true);
        }

        Assert.True(node0.Process.ExitCode == 0, node0.Output);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"node 0 took {sw.Elapsed} to finish alone");
        Assert.Contains("the agent of node 1 stopped heartbeating", node0.Output, StringComparison.Ordinal);
        Assert.Contains("[rank0]: rank 0/1 local 0 attempt 1: sum 1", node0.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void KillingNodeOnesAgentStopsNodeZeroWhenMinIsTwo()
    {
        var port = FreePort();
        string[] job = ["--nnodes", "2:2", "--nproc", "1", "--max-restarts", "1", "--rdzv-timeout", "6", "--heartbeat-timeout", "2", Bnbrun.Worker, "--hang-rank", "1"];
        using var nodes = StartNodes(
            ["--master-addr", "127.0.0.1", "--master-port", $"{port}", "--node-rank", "0", .. job],
            ["--master-addr", "127.0.0.1", "--master-port", $"{port}", "--node-rank", "1", .. job]);
        var (node0, node1) = (nodes.Node0, nodes.Node1);
        node1.WaitForLine(new Regex(@"\[rank1\]: pid (\d+)"), TimeSpan.FromSeconds(60));
        var sw = Stopwatch.StartNew();
        node1.Process.Kill();
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromSeconds(30)), node0.Output);
        node0.Process.WaitForExit();
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"node 0 took {sw.Elapsed} to stop");
        Assert.NotEqual(0, node0.Process.ExitCode);
        Assert.Contains("rendezvous round 1 timed out", node0.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void BadNodeCountsAreClearErrors()
    {
        foreach (var bad in new[] { "0", "2:1", "1:x", "1:2:3" })
        {
            var r = Bnbrun.Run(["--nnodes", bad, Bnbrun.Worker]);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("--nnodes must be N or MIN:MAX", r.Output, StringComparison.Ordinal);
        }
    }

    private static string[] Agent(int port, double lastCall, int nproc = 2) =>
        ["--nnodes", "1:2", "--nproc", $"{nproc}", "--master-addr", "127.0.0.1", "--master-port", $"{port}", "--rdzv-id", $"elastic-{port}",
            "--rdzv-last-call", $"{lastCall}", "--rdzv-timeout", "20"];

    /// <summary>
    /// Two 1:2 agents of one worker each, 2 s heartbeat timeout, one restart; returns once rank 1 (node 1) hangs in the
    /// job. Node 0's last call (4 s) is long enough for node 1 to join round 0 and short enough for a lone restart.
    /// </summary>
    private static NodePair StartWithHangingRankOne()
    {
        var port = FreePort();
        string[] job = ["--max-restarts", "1", "--heartbeat-timeout", "2", Bnbrun.Worker, "--hang-rank", "1"];
        var nodes = StartNodes([.. Agent(port, lastCall: 4, nproc: 1), .. job], [.. Agent(port, lastCall: 4, nproc: 1), .. job]);
        try
        {
            nodes.Node1.WaitForLine(new Regex(@"\[rank1\]: pid (\d+)"), TimeSpan.FromSeconds(60));
            return nodes;
        }
        catch
        {
            nodes.Dispose();
            throw;
        }
    }

    /// <summary>Runs two 1:2 agents of 2 workers each to the end (a 30 s last call: the round closes because MAX joined).</summary>
    private static NodePair RunTwoNodes(string[] job)
    {
        var port = FreePort();
        var nodes = StartNodes([.. Agent(port, lastCall: 30), .. job], [.. Agent(port, lastCall: 30), .. job]);
        try
        {
            WaitBoth(nodes.Node0, nodes.Node1);
            return nodes;
        }
        catch
        {
            nodes.Dispose();
            throw;
        }
    }

    /// <summary>Starts node 0's agent, waits until it hosts the store (so it is node 0), then starts node 1's.</summary>
    private static NodePair StartNodes(string[] args0, string[] args1)
    {
        var node0 = Bnbrun.Start(args0);
        try
        {
            node0.WaitForLine(StoreUp, TimeSpan.FromSeconds(30));
            return new NodePair(node0, Bnbrun.Start(args1));
        }
        catch
        {
            node0.Dispose();
            throw;
        }
    }

    /// <summary>2 nodes x 2 workers: ranks 0..3 on their nodes, in one world (all-reduce of rank+1 = 10).</summary>
    private static void AssertFourRanks(Bnbrun.Running node0, Bnbrun.Running node1, int attempt)
    {
        for (var rank = 0; rank < 4; rank++)
        {
            Assert.Contains($"[rank{rank}]: rank {rank}/4 local {rank % 2} attempt {attempt}: sum 10", (rank < 2 ? node0 : node1).Output, StringComparison.Ordinal);
        }
    }

    private static void WaitBoth(Bnbrun.Running a, Bnbrun.Running b)
    {
        var ok = a.Process.WaitForExit(TimeSpan.FromSeconds(60)) & b.Process.WaitForExit(TimeSpan.FromSeconds(60));
        Assert.True(ok, a.Output + b.Output);
        a.Process.WaitForExit();
        b.Process.WaitForExit();
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private sealed record NodePair(Bnbrun.Running Node0, Bnbrun.Running Node1) : IDisposable
    {
        public void Dispose()
        {
            Node1.Dispose();
            Node0.Dispose();
        }
    }
}
