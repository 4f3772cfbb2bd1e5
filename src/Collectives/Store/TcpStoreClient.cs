using System.Net.Sockets;
using System.Text;
using Polly;
using Polly.Retry;

namespace BnbDist.Collectives.Store;

/// <summary>
/// A client of <see cref="TcpStoreServer"/>. Connecting retries with exponential backoff (Polly) until
/// <see cref="StoreOptions.ConnectTimeout"/>; every failure is a <see cref="StoreException"/> naming the endpoint.
/// One request is in flight per client at a time (requests from several threads are serialized).
/// </summary>
public sealed class TcpStoreClient : IDisposable
{
    private readonly StoreOptions options;
    private readonly SemaphoreSlim oneAtATime = new(1, 1);
    private readonly TcpClient tcp;
    private readonly NetworkStream stream;

    private TcpStoreClient(string host, int port, StoreOptions options, TcpClient tcp)
    {
        Host = host;
        Port = port;
        this.options = options;
        this.tcp = tcp;
        stream = tcp.GetStream();
    }

    /// <summary>Server host.</summary>
    public string Host { get; }

    /// <summary>Server port.</summary>
    public int Port { get; }

    /// <summary>This side's address of the connection: an address of this host that the server's network reaches.</summary>
    public System.Net.IPAddress LocalAddress => ((System.Net.IPEndPoint)tcp.Client.LocalEndPoint!).Address;

    private string Endpoint => $"{Host}:{Port}";

    /// <summary>Connects (retrying while the server is not up yet) and authenticates.</summary>
    /// <exception cref="StoreException">No connection within the timeout, or the server refused the token.</exception>
    public static async Task<TcpStoreClient> ConnectAsync(string host, int port, StoreOptions? options = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        options ??= new StoreOptions();
        var deadline = DateTime.UtcNow + options.ConnectTimeout;
        // Outermost first: one overall deadline around retries with exponential backoff and jitter.
        var pipeline = new ResiliencePipelineBuilder()
            .AddTimeout(options.ConnectTimeout)
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<SocketException>().Handle<IOException>(),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(50),
                MaxDelay = TimeSpan.FromSeconds(2),
                MaxRetryAttempts = int.MaxValue,
            })
            .Build();

        TcpClient tcp;
        try
        {
            tcp = await pipeline.ExecuteAsync(async token =>
            {
                var c = new TcpClient { NoDelay = true };
                try
                {
                    var remaining = deadline - DateTime.UtcNow;
                    using var attempt = CancellationTokenSource.CreateLinkedTokenSource(token);
                    attempt.CancelAfter(remaining > TimeSpan.Zero ? remaining : TimeSpan.FromMilliseconds(1));
                    await c.ConnectAsync(host, port, attempt.Token).ConfigureAwait(false);
                    return c;
                }
                catch
                {
                    c.Dispose();
                    throw;
                }
            }, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is Polly.Timeout.TimeoutRejectedException or SocketException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            throw new StoreException($"Could not connect to the store at {host}:{port} within {options.ConnectTimeout.TotalSeconds:F0} s " +
                                     "(is the launcher of node 0 running, and MASTER_ADDR/MASTER_PORT right?).", ex);
        }

        var client = new TcpStoreClient(host, port, options, tcp);
        try
        {
            await client.HelloAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            client.Dispose();
            throw;
        }

        return client;
    }

    /// <summary>Connects synchronously (see <see cref="ConnectAsync"/>).</summary>
    public static TcpStoreClient Connect(string host, int port, StoreOptions? options = null) =>
        ConnectAsync(host, port, options).GetAwaiter().GetResult();

    /// <summary>Sets a key.</summary>
    public void Set(string key, byte[] value) => Call(new FrameWriter().Byte((byte)StoreOp.Set).String(key).Bytes(value));

    /// <summary>Sets a key to a UTF-8 string.</summary>
    public void Set(string key, string value) => Set(key, Encoding.UTF8.GetBytes(value));

    /// <summary>Gets a key, waiting until it exists (up to <paramref name="timeout"/>).</summary>
    /// <exception cref="StoreException">Timed out (the message names the key and the endpoint).</exception>
    public byte[] Get(string key, TimeSpan? timeout = null)
    {
        var t = timeout ?? options.OperationTimeout;
        var r = Call(new FrameWriter().Byte((byte)StoreOp.Get).String(key).Int64((long)t.TotalMilliseconds), t, key);
        return r.Bytes();
    }

    /// <summary>Gets a key as a UTF-8 string.</summary>
    public string GetString(string key, TimeSpan? timeout = null) => Encoding.UTF8.GetString(Get(key, timeout));

    /// <summary>Atomically adds <paramref name="delta"/> to an integer key (created at 0) and returns the new value.</summary>
    public long Add(string key, long delta) => Call(new FrameWriter().Byte((byte)StoreOp.Add).String(key).Int64(delta)).Int64();

    /// <summary>Sets <paramref name="key"/> to <paramref name="desired"/> if it currently equals <paramref name="expected"/>
    /// (empty = absent); returns the value after the operation.</summary>
    public byte[] CompareSet(string key, byte[] expected, byte[] desired) =>
        Call(new FrameWriter().Byte((byte)StoreOp.CompareSet).String(key).Bytes(expected).Bytes(desired)).Bytes();

    /// <summary>Waits until all keys exist; false on timeout.</summary>
    public bool Wait(IReadOnlyCollection<string> keys, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var t = timeout ?? options.OperationTimeout;
        var w = new FrameWriter().Byte((byte)StoreOp.Wait).UInt32((uint)keys.Count);
        foreach (var k in keys)
        {
            w.String(k);
        }

        w.Int64((long)t.TotalMilliseconds);
        return TryCall(w, t, out _);
    }

    /// <summary>Deletes a key; true if it existed.</summary>
    public bool Delete(string key) => Call(new FrameWriter().Byte((byte)StoreOp.Delete).String(key)).Byte() == 1;

    /// <summary>Number of keys in the store.</summary>
    public long NumKeys() => Call(new FrameWriter().Byte((byte)StoreOp.NumKeys)).Int64();

    /// <summary>Whether all keys exist (no waiting).</summary>
    public bool Check(IReadOnlyCollection<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var w = new FrameWriter().Byte((byte)StoreOp.Check).UInt32((uint)keys.Count);
        foreach (var k in keys)
        {
            w.String(k);
        }

        return Call(w).Byte() == 1;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        stream.Dispose();
        tcp.Dispose();
        oneAtATime.Dispose();
    }

    private async Task HelloAsync(CancellationToken ct)
    {
        var hello = new FrameWriter().Byte((byte)StoreOp.Hello).UInt32(StoreProtocol.Magic).UInt32(StoreProtocol.Version)
            .String(options.Token ?? string.Empty).ToArray();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.ConnectTimeout);
        try
        {
            await StoreProtocol.WriteFrameAsync(stream, hello, timeout.Token).ConfigureAwait(false);
            var reply = await StoreProtocol.ReadFrameAsync(stream, StoreProtocol.MaxHelloBytes, timeout.Token).ConfigureAwait(false)
                ?? throw new StoreException($"The store at {Endpoint} closed the connection during the handshake.");
            var r = new FrameReader(reply);
            if ((StoreStatus)r.Byte() != StoreStatus.Ok)
            {
                throw new StoreException($"The store at {Endpoint} refused this client: {r.String()}.");
            }
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or OperationCanceledException)
        {
            throw new StoreException($"Handshake with the store at {Endpoint} failed: {ex.Message}", ex);
        }
    }

    private FrameReader Call(FrameWriter request, TimeSpan? timeout = null, string? key = null)
    {
        if (!TryCall(request, timeout ?? options.OperationTimeout, out var reader))
        {
            throw new StoreException($"Timed out after {(timeout ?? options.OperationTimeout).TotalSeconds:F1} s waiting for key '{key}' in the store at {Endpoint}.");
        }

        return reader;
    }

    private bool TryCall(FrameWriter request, TimeSpan timeout, out FrameReader reader)
    {
        oneAtATime.Wait();
        try
        {
            // The server answers a timed-out wait itself; the extra margin only catches a dead server.
            using var cts = new CancellationTokenSource(timeout + TimeSpan.FromSeconds(30));
            StoreProtocol.WriteFrameAsync(stream, request.ToArray(), cts.Token).GetAwaiter().GetResult();
            var reply = StoreProtocol.ReadFrameAsync(stream, options.MaxMessageBytes, cts.Token).GetAwaiter().GetResult()
                ?? throw new StoreException($"The store at {Endpoint} closed the connection.");
            reader = new FrameReader(reply);
            var status = (StoreStatus)reader.Byte();
            return status switch
            {
                StoreStatus.Ok => true,
                StoreStatus.Timeout => false,
                _ => throw new StoreException($"The store at {Endpoint} reported an error: {reader.String()}."),
            };
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or OperationCanceledException or SocketException)
        {
            throw new StoreException($"Lost the store at {Endpoint}: {ex.Message}", ex);
        }
        finally
        {
            oneAtATime.Release();
        }
    }
}
