using System.Net.Sockets;
using System.Text;
using BnbDist.Collectives.Store;

namespace BnbDist.Collectives.Tests.Store;

/// <summary>The rendezvous store over real loopback sockets: semantics, atomicity, timeouts, authentication, fuzzing.</summary>
public sealed class TcpStoreTests : IAsyncDisposable
{
    private readonly TcpStoreServer server = new TcpStoreServer().Start();

    public ValueTask DisposeAsync() => server.DisposeAsync();

    [Fact]
    public void SetGetDeleteCheckAndNumKeysAcrossClients()
    {
        using var a = Connect();
        using var b = Connect();
        a.Set("k", "v1");
        Assert.Equal("v1", b.GetString("k"));
        Assert.True(b.Check(["k"]));
        Assert.False(b.Check(["k", "missing"]));
        Assert.Equal(1, a.NumKeys());
        Assert.True(b.Delete("k"));
        Assert.False(b.Delete("k"));
        Assert.Equal(0, a.NumKeys());
    }

    [Fact]
    public async Task GetBlocksUntilAnotherClientSetsTheKey()
    {
        using var a = Connect();
        using var b = Connect();
        var getter = Task.Run(() => a.GetString("late", TimeSpan.FromSeconds(10)), TestContext.Current.CancellationToken);
        await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.False(getter.IsCompleted);
        b.Set("late", "here");
        Assert.Equal("here", await getter);
    }

    [Fact]
    public void AddIsAtomicUnderConcurrentClients()
    {
        var clients = Enumerable.Range(0, 8).Select(_ => Connect()).ToList();
        try
        {
            Parallel.ForEach(clients, c =>
            {
                for (var i = 0; i < 100; i++)
                {
                    c.Add("counter", 1);
                }
            });
            Assert.Equal(800, clients[0].Add("counter", 0));
            Assert.Equal("800", clients[1].GetString("counter"));
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public void CompareSetSwapsOnlyOnMatch()
    {
        using var c = Connect();
        Assert.Equal("a", Encoding.UTF8.GetString(c.CompareSet("cs", [], "a"u8.ToArray())));
        Assert.Equal("a", Encoding.UTF8.GetString(c.CompareSet("cs", "x"u8.ToArray(), "b"u8.ToArray())));
        Assert.Equal("b", Encoding.UTF8.GetString(c.CompareSet("cs", "a"u8.ToArray(), "b"u8.ToArray())));
    }

    [Fact]
    public void WaitAndGetTimeOutWithAnErrorNamingKeyAndEndpoint()
    {
        using var c = Connect();
        Assert.False(c.Wait(["never"], TimeSpan.FromMilliseconds(200)));
        var ex = Assert.Throws<StoreException>(() => c.Get("never", TimeSpan.FromMilliseconds(200)));
        Assert.Contains("'never'", ex.Message, StringComparison.Ordinal);
        Assert.Contains($":{server.EndPoint.Port}", ex.Message, StringComparison.Ordinal);
        c.Set("now", "1");
        Assert.True(c.Wait(["now"], TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public async Task WrongTokenIsRefusedWithAClearMessageAndOthersAreUnaffected()
    {
        await using var secured = new TcpStoreServer(0, new StoreOptions { Token = "s3cret" }).Start();
        var port = secured.EndPoint.Port;
        var ex = Assert.Throws<StoreException>(() => TcpStoreClient.Connect("127.0.0.1", port, new StoreOptions { Token = "wrong", ConnectTimeout = TimeSpan.FromSeconds(5) }));
        Assert.Contains("authentication failed", ex.Message, StringComparison.Ordinal);
        Assert.Throws<StoreException>(() => TcpStoreClient.Connect("127.0.0.1", port, new StoreOptions { ConnectTimeout = TimeSpan.FromSeconds(5) }));
        using var good = TcpStoreClient.Connect("127.0.0.1", port, new StoreOptions { Token = "s3cret" });
        good.Set("x", "1");
        Assert.Equal("1", good.GetString("x"));
        Assert.True(secured.RejectedConnections >= 2);
    }

    [Fact]
    public void ConnectingToNothingFailsAfterTheTimeoutNamingTheEndpoint()
    {
        int freePort;
        using (var l = new TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            l.Start();
            freePort = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        }

        var sw = System.Diagnostics.Stopwatch.StartNew();
        var ex = Assert.Throws<StoreException>(() => TcpStoreClient.Connect("127.0.0.1", freePort, new StoreOptions { ConnectTimeout = TimeSpan.FromSeconds(1) }));
        Assert.Contains($"127.0.0.1:{freePort}", ex.Message, StringComparison.Ordinal);
        Assert.InRange(sw.Elapsed.TotalSeconds, 0.9, 10);
    }

    [Fact]
    public async Task ClientStartedBeforeTheServerConnectsOnceItIsUp()
    {
        int port;
        using (var l = new TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        }

        var connecting = TcpStoreClient.ConnectAsync("127.0.0.1", port, new StoreOptions { ConnectTimeout = TimeSpan.FromSeconds(20) }, TestContext.Current.CancellationToken);
        await Task.Delay(500, TestContext.Current.CancellationToken);
        await using var late = new TcpStoreServer(port).Start();
        using var c = await connecting;
        c.Set("a", "b");
        Assert.Equal("b", c.GetString("a"));
    }

    [Fact]
    public void MalformedTrafficNeverCrashesTheServer()
    {
        var rng = new Random(7);
        var cases = new List<byte[]>
        {
            BitConverter.GetBytes(uint.MaxValue),                          // huge length
            BitConverter.GetBytes(100u).Concat(new byte[10]).ToArray(),   // truncated frame
            BitConverter.GetBytes(0u),                                     // zero length
            BitConverter.GetBytes(5u).Concat(new byte[] { 1, 0, 0, 0, 0 }).ToArray(), // hello with a bad magic
        };
        for (var i = 0; i < 40; i++)
        {
            var junk = new byte[rng.Next(1, 300)];
            rng.NextBytes(junk);
            cases.Add(junk);
        }

        foreach (var payload in cases)
        {
            using var raw = new TcpClient();
            raw.Connect(server.EndPoint);
            raw.ReceiveTimeout = 2000;
            try
            {
                raw.GetStream().Write(payload);
                raw.Client.Shutdown(SocketShutdown.Send);
                var buf = new byte[64];
                while (raw.GetStream().Read(buf) > 0)
                {
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or InvalidOperationException)
            {
                // The server may hang up first; that is the point.
            }
        }

        // Also garbage after a valid handshake.
        using (var c = Connect())
        {
            c.Set("still", "alive");
        }

        using var after = Connect();
        Assert.Equal("alive", after.GetString("still"));
    }

    private TcpStoreClient Connect() => TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port);
}
