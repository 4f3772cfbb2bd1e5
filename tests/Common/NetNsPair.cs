using System.Diagnostics;

namespace BnbDist.Tests;

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

    /// <summary>Starts <c>bnbrun ARGS</c> inside node <paramref name="node"/>'s namespace (optionally with a store token).</summary>
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
