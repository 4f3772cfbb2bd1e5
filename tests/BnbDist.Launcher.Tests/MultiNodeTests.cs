using System.Diagnostics;
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
        using var node0 = net.Start(0, [.. Args(net, 0), "--timeout-s", "5"], token: "right-token");
        using var node1 = net.Start(1, [.. Args(net, 1), "--timeout-s", "5"], token: "wrong-token");
        Assert.True(node1.Process.WaitForExit(TimeSpan.FromMinutes(2)), node1.Output);
        node1.Process.WaitForExit();
        Assert.NotEqual(0, node1.Process.ExitCode);
        Assert.Contains("authentication failed", node1.Output, StringComparison.Ordinal);
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromMinutes(2)), node0.Output); // node 0 gives up instead of hanging
        Assert.NotEqual(0, node0.Process.ExitCode);
    }

    private static string[] Args(NetNsPair net, int nodeRank) =>
        ["--nnodes", "2", "--node-rank", $"{nodeRank}", "--nproc", "1", "--master-addr", net.Ip0, "--master-port", "29500",
            Bnbrun.Worker];
}

/// <summary>Two network namespaces linked by a veth pair (10.231.x.1 and 10.231.x.2), removed on dispose.</summary>
internal sealed class NetNsPair : IDisposable
{
    private NetNsPair(string suffix, int subnet)
    {
        Ns0 = $"bnbd{suffix}a";
        Ns1 = $"bnbd{suffix}b";
        Ip0 = $"10.231.{subnet}.1";
        Ip1 = $"10.231.{subnet}.2";
    }

    public string Ns0 { get; }

    public string Ns1 { get; }

    public string Ip0 { get; }

    public string Ip1 { get; }

    public static NetNsPair Create()
    {
        Assert.SkipUnless(Environment.UserName == "root" && (File.Exists("/usr/sbin/ip") || File.Exists("/sbin/ip")),
            "needs root and iproute2 to create network namespaces; the development and CI machines have both.");
        var suffix = Guid.NewGuid().ToString("N")[..6];
        var pair = new NetNsPair(suffix, Random.Shared.Next(1, 250));
        var (va, vb) = ($"v{suffix}a", $"v{suffix}b");
        try
        {
            Ip("netns", "add", pair.Ns0);
            Ip("netns", "add", pair.Ns1);
            Ip("link", "add", va, "type", "veth", "peer", "name", vb);
            Ip("link", "set", va, "netns", pair.Ns0);
            Ip("link", "set", vb, "netns", pair.Ns1);
            Ip("-n", pair.Ns0, "addr", "add", pair.Ip0 + "/24", "dev", va);
            Ip("-n", pair.Ns1, "addr", "add", pair.Ip1 + "/24", "dev", vb);
            foreach (var (ns, dev) in new[] { (pair.Ns0, va), (pair.Ns1, vb) })
            {
                Ip("-n", ns, "link", "set", dev, "up");
                Ip("-n", ns, "link", "set", "lo", "up");
            }
        }
        catch
        {
            pair.Dispose();
            throw;
        }

        return pair;
    }

    public Bnbrun.Running Start(int node, string[] args, string? token = null)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "netns", "exec", node == 0 ? Ns0 : Ns1, "dotnet", Bnbrun.LauncherPath })
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        if (token is not null)
        {
            psi.Environment["BNBDIST_STORE_TOKEN"] = token;
        }

        return new Bnbrun.Running(Process.Start(psi)!);
    }

    public void Dispose()
    {
        TryIp("netns", "del", Ns0);
        TryIp("netns", "del", Ns1);
    }

    private static void Ip(params string[] args)
    {
        var (code, output) = RunIp(args);
        if (code != 0)
        {
            Assert.Skip($"cannot set up network namespaces here (ip {string.Join(' ', args)}: {output.Trim()}); the development and CI machines can.");
        }
    }

    private static void TryIp(params string[] args) => RunIp(args);

    private static (int Code, string Output) RunIp(string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }
}
