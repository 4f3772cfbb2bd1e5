using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BnbDist.Collectives.Store;

/// <summary>
/// A TCP key-value store for rendezvous, like PyTorch's TCPStore: set, get (blocking), add (atomic counter),
/// compare-set, wait for keys, delete, number of keys. One bad or unauthenticated connection is closed without
/// affecting the others; every length on the wire is bounded before allocation.
/// </summary>
public sealed class TcpStoreServer : IAsyncDisposable
{
    private readonly StoreOptions options;
    private readonly ILogger logger;
    private readonly TcpListener listener;
    private readonly CancellationTokenSource stopping = new();
    private readonly object gate = new();
    private readonly Dictionary<string, byte[]> data = new(StringComparer.Ordinal);
    private readonly List<(HashSet<string> Keys, TaskCompletionSource Done)> waiters = [];
    private readonly byte[]? token;
    private Task? acceptLoop;

    /// <summary>Creates a server on <paramref name="port"/> (0 = any free port) of <see cref="StoreOptions.BindAddress"/>.</summary>
    public TcpStoreServer(int port = 0, StoreOptions? options = null, ILogger? logger = null)
    {
        this.options = options ?? new StoreOptions();
        this.logger = logger ?? NullLogger.Instance;
        token = this.options.Token is null ? null : Encoding.UTF8.GetBytes(this.options.Token);
        listener = new TcpListener(this.options.BindAddress, port);
    }

    /// <summary>The bound endpoint (after <see cref="Start"/>).</summary>
    public IPEndPoint EndPoint => (IPEndPoint)listener.LocalEndpoint;

    /// <summary>Connections closed because they failed authentication or sent malformed frames.</summary>
    public int RejectedConnections => rejected;

    private int rejected;

    /// <summary>Starts listening and accepting clients in the background.</summary>
    public TcpStoreServer Start()
    {
        listener.Start(backlog: 512);
        acceptLoop = AcceptLoopAsync(stopping.Token);
        logger.LogInformation("Store listening on {EndPoint} (authentication {Auth}).", EndPoint, token is null ? "off" : "on");
        return this;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        listener.Stop();
        if (acceptLoop is not null)
        {
            try
            {
                await acceptLoop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        lock (gate)
        {
            foreach (var w in waiters)
            {
                w.Done.TrySetCanceled();
            }
        }

        stopping.Dispose();
    }

    private async Task AcceptLoopAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            _ = Task.Run(() => ServeAsync(client, ct), ct);
        }
    }

    private async Task ServeAsync(TcpClient client, CancellationToken ct)
    {
        var peer = client.Client.RemoteEndPoint?.ToString() ?? "?";
        using (client)
        {
            client.NoDelay = true;
            var stream = client.GetStream();
            try
            {
                if (!await HandshakeAsync(stream, ct).ConfigureAwait(false))
                {
                    Interlocked.Increment(ref rejected);
                    logger.LogWarning("Store: refused {Peer}: authentication failed.", peer);
                    return;
                }

                while (!ct.IsCancellationRequested)
                {
                    var frame = await StoreProtocol.ReadFrameAsync(stream, options.MaxMessageBytes, ct).ConfigureAwait(false);
                    if (frame is null)
                    {
                        return;
                    }

                    var reply = await HandleAsync(new FrameReader(frame), ct).ConfigureAwait(false);
                    await StoreProtocol.WriteFrameAsync(stream, reply, ct).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (ex is InvalidDataException or EndOfStreamException or IOException or SocketException)
            {
                Interlocked.Increment(ref rejected);
                logger.LogWarning("Store: closed connection from {Peer}: {Reason}", peer, ex.Message);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    private async Task<bool> HandshakeAsync(NetworkStream stream, CancellationToken ct)
    {
        var hello = await StoreProtocol.ReadFrameAsync(stream, StoreProtocol.MaxHelloBytes, ct).ConfigureAwait(false);
        if (hello is null)
        {
            return false;
        }

        var r = new FrameReader(hello);
        if ((StoreOp)r.Byte() != StoreOp.Hello || r.UInt32() != StoreProtocol.Magic)
        {
            throw new InvalidDataException("not a BnbDist store client (bad hello).");
        }

        var version = r.UInt32();
        var presented = r.Bytes();
        var ok = version == StoreProtocol.Version &&
                 (token is null || CryptographicOperations.FixedTimeEquals(presented, token));
        var reply = ok
            ? new FrameWriter().Byte((byte)StoreStatus.Ok).ToArray()
            : new FrameWriter().Byte((byte)StoreStatus.Error)
                .String(version != StoreProtocol.Version
                    ? $"protocol version {version} is not supported (server speaks {StoreProtocol.Version})"
                    : "authentication failed: the store token does not match (set the same BNBDIST_STORE_TOKEN on every node)")
                .ToArray();
        await StoreProtocol.WriteFrameAsync(stream, reply, ct).ConfigureAwait(false);
        return ok;
    }

    private async Task<byte[]> HandleAsync(FrameReader r, CancellationToken ct)
    {
        var op = (StoreOp)r.Byte();
        switch (op)
        {
            case StoreOp.Set:
                {
                    var key = r.String();
                    var value = r.Bytes();
                    Put(key, value);
                    return Ok().ToArray();
                }

            case StoreOp.Get:
                {
                    var key = r.String();
                    var timeout = TimeSpan.FromMilliseconds(r.Int64());
                    if (!await WaitForAsync([key], timeout, ct).ConfigureAwait(false))
                    {
                        return new FrameWriter().Byte((byte)StoreStatus.Timeout).ToArray();
                    }

                    lock (gate)
                    {
                        return data.TryGetValue(key, out var v)
                            ? Ok().Bytes(v).ToArray()
                            : new FrameWriter().Byte((byte)StoreStatus.Timeout).ToArray();
                    }
                }

            case StoreOp.Add:
                {
                    var key = r.String();
                    var delta = r.Int64();
                    long result;
                    lock (gate)
                    {
                        long current = 0;
                        if (data.TryGetValue(key, out var v) && !long.TryParse(Encoding.ASCII.GetString(v), out current))
                        {
                            return Error($"key '{key}' does not hold an integer").ToArray();
                        }

                        result = current + delta;
                        PutLocked(key, Encoding.ASCII.GetBytes(result.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                    }

                    return Ok().Int64(result).ToArray();
                }

            case StoreOp.CompareSet:
                {
                    var key = r.String();
                    var expected = r.Bytes();
                    var desired = r.Bytes();
                    lock (gate)
                    {
                        var exists = data.TryGetValue(key, out var current);
                        if ((!exists && expected.Length == 0) || (exists && current!.AsSpan().SequenceEqual(expected)))
                        {
                            PutLocked(key, desired);
                            return Ok().Bytes(desired).ToArray();
                        }

                        return Ok().Bytes(current ?? expected).ToArray();
                    }
                }

            case StoreOp.Wait:
                {
                    var count = r.UInt32();
                    if (count > 65536)
                    {
                        throw new InvalidDataException($"wait for {count} keys exceeds the limit of 65536.");
                    }

                    var keys = new List<string>();
                    for (var i = 0; i < count; i++)
                    {
                        keys.Add(r.String());
                    }

                    var timeout = TimeSpan.FromMilliseconds(r.Int64());
                    var ok = await WaitForAsync(keys, timeout, ct).ConfigureAwait(false);
                    return new FrameWriter().Byte((byte)(ok ? StoreStatus.Ok : StoreStatus.Timeout)).ToArray();
                }

            case StoreOp.Delete:
                {
                    var key = r.String();
                    lock (gate)
                    {
                        return Ok().Byte(data.Remove(key) ? (byte)1 : (byte)0).ToArray();
                    }
                }

            case StoreOp.NumKeys:
                lock (gate)
                {
                    return Ok().Int64(data.Count).ToArray();
                }

            case StoreOp.Check:
                {
                    var count = r.UInt32();
                    if (count > 65536)
                    {
                        throw new InvalidDataException($"check of {count} keys exceeds the limit of 65536.");
                    }

                    var all = true;
                    lock (gate)
                    {
                        for (var i = 0; i < count; i++)
                        {
                            all &= data.ContainsKey(r.String());
                        }
                    }

                    return Ok().Byte(all ? (byte)1 : (byte)0).ToArray();
                }

            default:
                throw new InvalidDataException($"unknown operation {(byte)op}.");
        }
    }

    private void Put(string key, byte[] value)
    {
        lock (gate)
        {
            PutLocked(key, value);
        }
    }

    private void PutLocked(string key, byte[] value)
    {
        data[key] = value;
        for (var i = waiters.Count - 1; i >= 0; i--)
        {
            var (keys, done) = waiters[i];
            if (keys.All(data.ContainsKey))
            {
                waiters.RemoveAt(i);
                done.TrySetResult();
            }
        }
    }

    private async Task<bool> WaitForAsync(IReadOnlyCollection<string> keys, TimeSpan timeout, CancellationToken ct)
    {
        TaskCompletionSource done;
        lock (gate)
        {
            if (keys.All(data.ContainsKey))
            {
                return true;
            }

            done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            waiters.Add((new HashSet<string>(keys, StringComparer.Ordinal), done));
        }

        try
        {
            await done.Task.WaitAsync(timeout, ct).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            lock (gate)
            {
                waiters.RemoveAll(w => w.Done == done);
                return keys.All(data.ContainsKey);
            }
        }
    }

    private static FrameWriter Ok() => new FrameWriter().Byte((byte)StoreStatus.Ok);

    private static FrameWriter Error(string message) => new FrameWriter().Byte((byte)StoreStatus.Error).String(message);
}
