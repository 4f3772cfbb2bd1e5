using BnbDist.Tests;

namespace BnbDist.Launcher.Tests;

/// <summary>
/// Two "nodes" on this machine: two network namespaces joined by a veth pair, one bnbrun agent in each
/// (`--nnodes 2`). Needs root and iproute2 (as on the development and CI machines); skipped with the reason otherwise.
/// </summary>
[Collection("processes")]
public sealed class MultiNodeTests
{
    [Fact]
    public void TwoAgentsInTwoNetworkNamespacesRunOneCollectiveJob()
    {
        using var net = NetNsPair.Create();
        using var node0 = net.Start(0, Args(net, 0));
        using var node1 = net.Start(1, Args(net, 1));
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromMinutes(2)) && node1.Process.WaitForExit(TimeSpan.FromMinutes(2)), node0.Output + node1.Output);
        node0.Process.WaitForExit();
        node1.Process.WaitForExit();
        Assert.True(node0.Process.ExitCode == 0, node0.Output);
        Assert.True(node1.Process.ExitCode == 0, node1.Output);
        Assert.Contains("[rank0]: rank 0/2 local 0 attempt 0: sum 3", node0.Output, StringComparison.Ordinal);
        Assert.Contains("[rank1]: rank 1/2 local 0 attempt 0: sum 3", node1.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void ASecondNodeWithTheWrongTokenIsRefusedWithAClearMessage()
    {
        using var net = NetNsPair.Create();
        // Node 0 waits for node 1 in the rendezvous; the rendezvous timeout bounds that wait.
        using var node0 = net.Start(0, ["--rdzv-timeout", "5", .. Args(net, 0), "--timeout-s", "5"], token: "right-token");
        using var node1 = net.Start(1, [.. Args(net, 1), "--timeout-s", "5"], token: "wrong-token");
        Assert.True(node1.Process.WaitForExit(TimeSpan.FromMinutes(2)), node1.Output);
        node1.Process.WaitForExit();
        Assert.NotEqual(0, node1.Process.ExitCode);
        Assert.Contains("authentication failed", node1.Output, StringComparison.Ordinal);
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromMinutes(2)), node0.Output); // node 0 gives up instead of hanging
        Assert.NotEqual(0, node0.Process.ExitCode);
    }

    [Fact]
    public void ElasticAgentsInTwoNamespacesRestartTogetherAfterAFailureOnNodeOne()
    {
        // --nnodes 1:2 with no --node-rank: the agent on the host of --master-addr hosts the store and is node 0, the
        // other joins over the veth link as node 1; rank 1 fails once and both nodes restart in round 1.
        using var net = NetNsPair.Create();
        var marker = Path.Combine(Path.GetTempPath(), "bnbrun-netns-" + Guid.NewGuid().ToString("N"));
        string[] args = ["--nnodes", "1:2", "--nproc", "1", "--master-addr", net.Ip0, "--master-port", "29500", "--rdzv-last-call", "60",
            "--rdzv-timeout", "60", "--max-restarts", "1", Bnbrun.Worker, "--fail-rank", "1", "--fail-marker", marker];
        using var node0 = net.Start(0, args);
        using var node1 = net.Start(1, args);
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromMinutes(2)) && node1.Process.WaitForExit(TimeSpan.FromMinutes(2)), node0.Output + node1.Output);
        node0.Process.WaitForExit();
        node1.Process.WaitForExit();
        Assert.True(node0.Process.ExitCode == 0, node0.Output + node1.Output);
        Assert.True(node1.Process.ExitCode == 0, node0.Output + node1.Output);
        Assert.True(File.Exists(marker), "rank 1 never failed");
        File.Delete(marker);
        Assert.Contains("Joined rendezvous round 1 as node 1 of 2.", node1.Output, StringComparison.Ordinal);
        Assert.Contains("[rank0]: rank 0/2 local 0 attempt 1: sum 3", node0.Output, StringComparison.Ordinal);
        Assert.Contains("[rank1]: rank 1/2 local 0 attempt 1: sum 3", node1.Output, StringComparison.Ordinal);
    }

    private static string[] Args(NetNsPair net, int nodeRank) =>
        ["--nnodes", "2", "--node-rank", $"{nodeRank}", "--nproc", "1", "--master-addr", net.Ip0, "--master-port", "29500",
            Bnbrun.Worker];
}
