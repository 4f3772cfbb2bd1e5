using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using BnbDist.Backends.Interop;
using BnbDist.Collectives.Store;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Collectives.Cpu;

/// <summary>Settings of a <see cref="TcpCommunicator"/>.</summary>
public sealed record CommunicatorOptions
{
    /// <summary>Time limit of every send/receive inside a collective.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Address this rank listens on for its peers (loopback for single-node jobs, any for multi-node).</summary>
    public IPAddress BindAddress { get; init; } = IPAddress.Loopback;

    /// <summary>Address peers should connect to (published in the store); null = <see cref="BindAddress"/>.</summary>
    public IPAddress? AdvertiseAddress { get; init; }

    /// <summary>Prefix of this group's keys in the store (distinct groups, or restarts, use distinct prefixes).</summary>
    public string StorePrefix { get; init; } = "bnbdist/cpu";
}

/// <summary>
/// The CPU backend: a full mesh of TCP connections between ranks (peers found through the rendezvous store) and
/// ring algorithms for all-reduce, all-gather and reduce-scatter. Any dtype, any size (including 0, 1 and sizes not
/// divisible by the world size). Every message carries a sequence number and byte count, so ranks that disagree on
/// an op fail with a clear error instead of corrupting data; any failure aborts all connections, so peers fail fast.
/// </summary>
public sealed class TcpCommunicator : ICommunicator
{
    private readonly Socket?[] peers;
    private readonly CommunicatorOptions options;
    private readonly CollectiveQueue queue;
    private uint sequence;
    private bool aborted;

    private TcpCommunicator(int rank, int worldSize, Socket?[] peers, CommunicatorOptions options)
    {
        Rank = rank;
        WorldSize = worldSize;
        this.peers = peers;
        this.options = options;
        queue = new CollectiveQueue($"bnbdist-cpu-collectives-rank{rank}");
    }

    /// <inheritdoc/>
    public int Rank { get; }

    /// <inheritdoc/>
    public int WorldSize { get; }

    /// <inheritdoc/>
    public string Backend => "cpu";

    /// <summary>Joins the group: publishes this rank's address in the store and connects to every other rank.</summary>
    /// <exception cref="CollectiveException">A peer did not show up within the timeout.</exception>
    public static TcpCommunicator Create(TcpStoreClient store, int rank, int worldSize, CommunicatorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 0..{worldSize - 1}.");
        }

        options ??= new CommunicatorOptions();
        var peers = new Socket?[worldSize];
        using var listener = new Socket(options.BindAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(options.BindAddress, 0));
        listener.Listen(worldSize);
        var me = (IPEndPoint)listener.LocalEndPoint!;
        var advertised = options.AdvertiseAddress ?? me.Address;
        if (advertised.Equals(IPAddress.Any) || advertised.Equals(IPAddress.IPv6Any))
        {
            throw new ArgumentException("Listening on all addresses needs an AdvertiseAddress that peers can reach.", nameof(options));
        }

        store.Set($"{options.StorePrefix}/addr/{rank}", $"{advertised}:{me.Port}");

        try
        {
            // Lower ranks connect to higher ones; each connection starts with the connecting rank's number.
            var connecting = Task.Run(() =>
            {
                for (var j = rank + 1; j < worldSize; j++)
                {
                    var addr = store.GetString($"{options.StorePrefix}/addr/{j}", options.Timeout);
                    var sep = addr.LastIndexOf(':');
                    var s = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    s.Connect(IPAddress.Parse(addr[..sep]), int.Parse(addr[(sep + 1)..], System.Globalization.CultureInfo.InvariantCulture));
                    var hello = new byte[4];
                    BinaryPrimitives.WriteInt32LittleEndian(hello, rank);
                    s.Send(hello);
                    peers[j] = s;
                }
            });

            var deadline = DateTime.UtcNow + options.Timeout;
            for (var accepted = 0; accepted < rank; accepted++)
            {
                var remaining = deadline - DateTime.UtcNow;
                if (remaining <= TimeSpan.Zero || !listener.Poll((int)Math.Min(int.MaxValue, remaining.TotalMicroseconds), SelectMode.SelectRead))
                {
                    throw new CollectiveException($"rank {rank}: rendezvous timed out: only {accepted} of {rank} lower ranks connected within {options.Timeout.TotalSeconds:F0} s.");
                }

                var s = listener.Accept();
                s.NoDelay = true;
                s.ReceiveTimeout = (int)Math.Min(int.MaxValue, options.Timeout.TotalMilliseconds);
                var hello = new byte[4];
                ReceiveExactly(s, hello);
                var from = BinaryPrimitives.ReadInt32LittleEndian(hello);
                if (from < 0 || from >= rank || peers[from] is not null)
                {
                    s.Dispose();
                    throw new CollectiveException($"rank {rank}: unexpected connection claiming rank {from}.");
                }

                peers[from] = s;
            }

            if (!connecting.Wait(options.Timeout))
            {
                throw new CollectiveException($"rank {rank}: rendezvous timed out: could not connect to all higher ranks within {options.Timeout.TotalSeconds:F0} s.");
            }

            connecting.GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is not CollectiveException)
        {
            foreach (var p in peers)
            {
                p?.Dispose();
            }

            throw new CollectiveException($"rank {rank}: rendezvous failed (joining the CPU process group): {ex.Message}", ex);
        }

        foreach (var p in peers)
        {
            if (p is not null)
            {
                p.ReceiveTimeout = p.SendTimeout = (int)Math.Min(int.MaxValue, options.Timeout.TotalMilliseconds);
            }
        }

        return new TcpCommunicator(rank, worldSize, peers, options);
    }

    /// <inheritdoc/>
    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) => Wait(AllReduceAsync(tensor, op));

    /// <inheritdoc cref="ICommunicator.AllReduce"/>
    public Task AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum) => Enqueue("all_reduce", () =>
    {
        Check(tensor, nameof(tensor));
        CheckAvg(tensor, op);
        using var flat = tensor.view(-1);
        RingReduceScatter(flat, op, shift: 0);
        RingAllGather(flat, shift: 1);
        if (op == ReduceOp.Avg)
        {
            flat.div_(WorldSize);
        }
    });

    /// <inheritdoc/>
    public void AllGather(Tensor output, Tensor input) => Wait(AllGatherAsync(output, input));

    /// <inheritdoc/>
    public Task AllGatherAsync(Tensor output, Tensor input) => Enqueue("all_gather", () =>
    {
        Check(output, nameof(output));
        Check(input, nameof(input));
        if (output.numel() != input.numel() * WorldSize || output.dtype != input.dtype)
        {
            throw new ArgumentException($"output must be {input.dtype} with {input.numel() * WorldSize} elements; got {output.dtype} with {output.numel()}.", nameof(output));
        }

        using var flat = output.view(-1);
        using (var mine = flat.narrow(0, Rank * input.numel(), input.numel()))
        {
            mine.copy_(input.view(-1));
        }

        RingAllGather(flat, shift: 0);
    });

    /// <inheritdoc/>
    public void AllGather(IList<Tensor> outputs, Tensor input)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        if (outputs.Count != WorldSize)
        {
            throw new ArgumentException($"outputs must hold {WorldSize} tensors; got {outputs.Count}.", nameof(outputs));
        }

        using var all = empty(input.numel() * WorldSize, input.dtype);
        AllGather(all, input);
        for (var r = 0; r < WorldSize; r++)
        {
            using var part = all.narrow(0, r * input.numel(), input.numel());
            outputs[r].copy_(part.view(input.shape));
        }
    }

    /// <inheritdoc/>
    public void ReduceScatter(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum) => Wait(ReduceScatterAsync(output, input, op));

    /// <inheritdoc cref="ICommunicator.ReduceScatter"/>
    public Task ReduceScatterAsync(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum) => Enqueue("reduce_scatter", () =>
    {
        Check(output, nameof(output));
        Check(input, nameof(input));
        CheckAvg(input, op);
        if (input.numel() != output.numel() * WorldSize || output.dtype != input.dtype)
        {
            throw new ArgumentException($"input must be {output.dtype} with {output.numel() * WorldSize} elements; got {input.dtype} with {input.numel()}.", nameof(input));
        }

        using var work = input.reshape(-1).clone();
        RingReduceScatter(work, op, shift: -1);
        using var mine = work.narrow(0, Rank * output.numel(), output.numel());
        output.view(-1).copy_(mine);
        if (op == ReduceOp.Avg)
        {
            output.div_(WorldSize);
        }
    });

    /// <inheritdoc/>
    public void Broadcast(Tensor tensor, int root = 0) => Wait(BroadcastAsync(tensor, root));

    /// <inheritdoc cref="ICommunicator.Broadcast"/>
    public Task BroadcastAsync(Tensor tensor, int root = 0) => Enqueue("broadcast", () =>
    {
        Check(tensor, nameof(tensor));
        CheckRank(root, nameof(root));
        var seq = ++sequence;
        if (Rank == root)
        {
            for (var r = 0; r < WorldSize; r++)
            {
                if (r != root)
                {
                    SendBytes(r, tensor, seq);
                }
            }
        }
        else
        {
            ReceiveBytes(root, tensor, seq);
        }
    });

    /// <inheritdoc/>
    public void Send(Tensor tensor, int dst) => Wait(SendAsync(tensor, dst));

    /// <inheritdoc cref="ICommunicator.Send"/>
    public Task SendAsync(Tensor tensor, int dst) => Enqueue("send", () =>
    {
        Check(tensor, nameof(tensor));
        CheckRank(dst, nameof(dst));
        SendBytes(dst, tensor, 0);
    });

    /// <inheritdoc/>
    public void Recv(Tensor tensor, int src) => Wait(RecvAsync(tensor, src));

    /// <inheritdoc cref="ICommunicator.Recv"/>
    public Task RecvAsync(Tensor tensor, int src) => Enqueue("recv", () =>
    {
        Check(tensor, nameof(tensor));
        CheckRank(src, nameof(src));
        ReceiveBytes(src, tensor, 0);
    });

    /// <inheritdoc/>
    public void Barrier()
    {
        using var token = ones(1, ScalarType.Int32);
        AllReduce(token);
    }

    /// <summary>Closes every connection (peers see their next operation fail instead of waiting).</summary>
    public void Abort()
    {
        aborted = true;
        foreach (var p in peers)
        {
            try
            {
                p?.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }

            p?.Dispose();
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Abort(); // first: a collective blocked on a socket fails at once instead of holding up the queue
        queue.Dispose();
    }

    private Task Enqueue(string op, Action body)
    {
        if (aborted)
        {
            return Task.FromException(new CollectiveException($"rank {Rank}: {op} on an aborted communicator (an earlier collective failed)."));
        }

        return queue.Enqueue(() =>
        {
            if (aborted)
            {
                throw new CollectiveException($"rank {Rank}: {op} on an aborted communicator (an earlier collective failed).");
            }

            try
            {
                body();
            }
            catch (ArgumentException)
            {
                throw;
            }
            catch (Exception ex)
            {
                Abort();
                throw new CollectiveException($"rank {Rank}: {op} failed: {ex.Message}", ex);
            }
        });
    }

    private static void Wait(Task task) => task.GetAwaiter().GetResult();

    // Ring reduce-scatter over W chunks: after it, this rank's chunk (rank + 1 + shift) mod W holds the reduction.
    private void RingReduceScatter(Tensor flat, ReduceOp op, int shift) => RingPass(flat, shift, op);

    // Ring all-gather: each rank starts owning chunk (rank + shift) mod W complete.
    private void RingAllGather(Tensor flat, int shift) => RingPass(flat, shift, null);

    // W-1 ring steps: send chunk (rank - s + shift) to the next rank while receiving chunk (rank - s - 1 + shift) from the
    // previous one, either reducing it into ours (reduce-scatter) or taking it as is (all-gather).
    private void RingPass(Tensor flat, int shift, ReduceOp? reduce)
    {
        var w = WorldSize;
        var n = flat.numel();
        var next = (Rank + 1) % w;
        var prev = (Rank - 1 + w) % w;
        for (var s = 0; s < w - 1; s++)
        {
            var seq = ++sequence;
            using var sendChunk = Chunk(flat, n, Mod(Rank - s + shift, w));
            using var recvChunk = Chunk(flat, n, Mod(Rank - s - 1 + shift, w));
            if (reduce is ReduceOp op)
            {
                using var incoming = empty(recvChunk.numel(), flat.dtype);
                Exchange(next, sendChunk, prev, incoming, seq);
                Reduce(recvChunk, incoming, op);
            }
            else
            {
                Exchange(next, sendChunk, prev, recvChunk, seq);
            }
        }
    }

    private Tensor Chunk(Tensor flat, long n, int c)
    {
        var start = c * n / WorldSize;
        var end = (c + 1) * n / WorldSize;
        return flat.narrow(0, start, end - start);
    }

    private void Exchange(int to, Tensor send, int from, Tensor receive, uint seq)
    {
        // Both directions at once: with large chunks, sending before receiving on every rank would deadlock.
        var sending = Task.Run(() => SendBytes(to, send, seq));
        ReceiveBytes(from, receive, seq);
        sending.GetAwaiter().GetResult();
    }

    private unsafe void SendBytes(int peer, Tensor t, uint seq)
    {
        var socket = peers[peer]!;
        var bytes = t.numel() * t.element_size();
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(header, seq);
        BinaryPrimitives.WriteInt64LittleEndian(header[4..], bytes);
        socket.Send(header);
        var p = (byte*)TensorMemory.DataPointer(t);
        for (long off = 0; off < bytes;)
        {
            var len = (int)Math.Min(1 << 30, bytes - off);
            off += socket.Send(new ReadOnlySpan<byte>(p + off, len));
        }

        GC.KeepAlive(t);
    }

    private unsafe void ReceiveBytes(int peer, Tensor t, uint seq)
    {
        var socket = peers[peer]!;
        var expected = t.numel() * t.element_size();
        var header = new byte[12];
        ReceiveExactly(socket, header);
        var gotSeq = BinaryPrimitives.ReadUInt32LittleEndian(header);
        var gotBytes = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(4));
        if (gotSeq != seq || gotBytes != expected)
        {
            throw new CollectiveException(
                $"rank {Rank}: rank {peer} sent message #{gotSeq} of {gotBytes} bytes where #{seq} of {expected} bytes was expected (ranks called different collectives or sizes).");
        }

        var p = (byte*)TensorMemory.DataPointer(t);
        for (long off = 0; off < expected;)
        {
            var len = (int)Math.Min(1 << 30, expected - off);
            var n = socket.Receive(new Span<byte>(p + off, len));
            if (n == 0)
            {
                throw new CollectiveException($"rank {Rank}: rank {peer} closed its connection (it failed or exited).");
            }

            off += n;
        }

        GC.KeepAlive(t);
    }

    private static void ReceiveExactly(Socket s, byte[] buffer)
    {
        for (var off = 0; off < buffer.Length;)
        {
            var n = s.Receive(buffer, off, buffer.Length - off, SocketFlags.None);
            if (n == 0)
            {
                throw new CollectiveException("a peer closed its connection (it failed or exited).");
            }

            off += n;
        }
    }

    private static void Reduce(Tensor into, Tensor other, ReduceOp op)
    {
        switch (op)
        {
            case ReduceOp.Sum or ReduceOp.Avg:
                into.add_(other);
                break;
            case ReduceOp.Max:
                using (var m = into.maximum(other))
                {
                    into.copy_(m);
                }

                break;
            default:
                using (var m = into.minimum(other))
                {
                    into.copy_(m);
                }

                break;
        }
    }

    private static int Mod(int a, int m) => ((a % m) + m) % m;

    private void CheckRank(int r, string name)
    {
        if (r < 0 || r >= WorldSize || (r == Rank && name is "dst" or "src"))
        {
            throw new ArgumentOutOfRangeException(name, r, $"must be another rank in 0..{WorldSize - 1}.");
        }
    }

    private static void Check(Tensor t, string name)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        if (t.device_type != DeviceType.CPU)
        {
            throw new ArgumentException($"{name} is on {t.device}; the CPU backend takes CPU tensors (use NCCL for CUDA tensors).", name);
        }

        if (!t.is_contiguous())
        {
            throw new ArgumentException($"{name} must be contiguous.", name);
        }
    }

    private static void CheckAvg(Tensor t, ReduceOp op)
    {
        if (op == ReduceOp.Avg && !t.is_floating_point())
        {
            throw new ArgumentException($"Avg needs a float tensor; got {t.dtype}.", nameof(op));
        }
    }
}
