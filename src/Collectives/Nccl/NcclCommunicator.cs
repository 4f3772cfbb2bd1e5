using BnbDist.Backends.Interop;
using BnbDist.Collectives.Store;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Collectives.Nccl;

/// <summary>Settings of an <see cref="NcclCommunicator"/>.</summary>
public sealed record NcclOptions
{
    /// <summary>Time limit of the rendezvous and of every collective (counted from when it is the oldest one in flight).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Prefix of this group's keys in the store (distinct groups, or restarts, use distinct prefixes).</summary>
    public string StorePrefix { get; init; } = "bnbdist/nccl";
}

/// <summary>
/// The GPU backend: one NCCL communicator per process on the GPU <c>LOCAL_RANK</c> (rank 0's unique id travels
/// through the rendezvous store). Collectives run on the communicator's own CUDA stream, ordered with TorchSharp's
/// legacy default stream by events in both directions: they start after everything already queued on the default
/// stream and everything queued there afterwards sees their result, so the caller may keep computing before a task
/// completes. Blocking calls return when the collective has finished on the GPU; async calls return at once and
/// their task completes then. <see cref="AllGatherDeferred"/> leaves the default stream free until the caller orders
/// it after the all-gather, so compute queued meanwhile overlaps the transfer. A watchdog aborts the communicator when NCCL reports an asynchronous error or a
/// collective outlasts the timeout, and every pending and later call throws <see cref="CollectiveException"/>.
/// </summary>
public sealed class NcclCommunicator : ICommunicator, IDeviceStreamCommunicator
{
    private readonly object sync = new();
    private readonly NcclOptions options;
    private readonly IntPtr stream;
    private readonly NcclWatchdog watchdog;
    private readonly Tensor barrierToken;
    private readonly IntPtr before; // records the default stream's position; re-recorded for every collective
    private IntPtr comm;
    private string? abortReason;
    private bool disposed;

    private NcclCommunicator(IntPtr comm, int rank, int worldSize, int deviceIndex, IntPtr stream, NcclOptions options)
    {
        this.comm = comm;
        Rank = rank;
        WorldSize = worldSize;
        DeviceIndex = deviceIndex;
        this.stream = stream;
        this.options = options;
        Device = new Device(DeviceType.CUDA, deviceIndex);
        barrierToken = ones(1, ScalarType.Int32, Device);
        CudaRuntime.Check(CudaRuntime.cudaEventCreateWithFlags(out before, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        watchdog = new NcclWatchdog(deviceIndex, options.Timeout, AsyncError, reason => Abort(reason), $"bnbdist-nccl-watchdog-rank{rank}");
    }

    /// <inheritdoc/>
    public int Rank { get; }

    /// <inheritdoc/>
    public int WorldSize { get; }

    /// <inheritdoc/>
    public string Backend => "nccl";

    /// <summary>The CUDA device of this rank (from LOCAL_RANK); collectives take tensors on it.</summary>
    public Device Device { get; }

    /// <summary>Index of <see cref="Device"/>.</summary>
    public int DeviceIndex { get; }

    /// <summary>Why the communicator was aborted, or null while it is healthy.</summary>
    public string? AbortReason
    {
        get
        {
            lock (sync)
            {
                return abortReason;
            }
        }
    }

    /// <summary>
    /// Joins the group: selects GPU <paramref name="localRank"/>, exchanges rank 0's NCCL unique id through the store,
    /// waits until every rank has it, and creates the NCCL communicator.
    /// </summary>
    /// <exception cref="CollectiveException">NCCL is missing or too old, the GPU does not exist, a rank did not join in time, or NCCL failed.</exception>
    public static NcclCommunicator Create(TcpStoreClient store, int rank, int worldSize, int localRank, NcclOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 0..{worldSize - 1}.");
        }

        options ??= new NcclOptions();
        NcclLibrary.EnsureAvailable();
        var gpus = cuda.is_available() ? cuda.device_count() : 0;
        if (localRank < 0 || localRank >= gpus)
        {
            throw new CollectiveException(
                $"rank {rank}: the NCCL backend needs one GPU per local rank, but LOCAL_RANK is {localRank} and {gpus} GPU(s) are visible" +
                (gpus == 0 ? " (no CUDA build of libtorch, or no driver: see `bnbdist diagnose`)." : "."));
        }

        CudaRuntime.Check(CudaRuntime.cudaSetDevice(localRank), "cudaSetDevice");
        var id = ExchangeUniqueId(store, rank, worldSize, options);
        var init = Task.Run(() =>
        {
            CudaRuntime.Check(CudaRuntime.cudaSetDevice(localRank), "cudaSetDevice");
            var rc = NcclNative.ncclCommInitRank(out var c, worldSize, id, rank);
            return rc == NcclNative.Success
                ? c
                : throw new CollectiveException($"rank {rank}: ncclCommInitRank on GPU {localRank} failed: {NcclNative.Describe(rc, IntPtr.Zero)}.");
        });
        if (!init.Wait(options.Timeout))
        {
            throw new CollectiveException($"rank {rank}: ncclCommInitRank did not finish within {options.Timeout.TotalSeconds:F0} s (rendezvous of the NCCL group).");
        }

        var handle = init.GetAwaiter().GetResult();
        CudaRuntime.Check(CudaRuntime.cudaStreamCreateWithFlags(out var s, CudaRuntime.StreamNonBlocking), "cudaStreamCreateWithFlags");
        return new NcclCommunicator(handle, rank, worldSize, localRank, s, options);
    }

    /// <inheritdoc/>
    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) => Wait(AllReduceAsync(tensor, op));

    /// <inheritdoc/>
    public Task AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        Check(tensor, nameof(tensor));
        CheckAvg(tensor, op);
        var dt = NcclNative.DataType(tensor.dtype, nameof(tensor));
        var p = TensorMemory.DataPointer(tensor);
        var nop = NcclOp(op);
        return Enqueue("all_reduce", tensor.numel(), (c, s) => NcclNative.ncclAllReduce(p, p, (nuint)tensor.numel(), dt, nop, c, s));
    }

    /// <inheritdoc/>
    public void AllGather(Tensor output, Tensor input) => Wait(AllGatherAsync(output, input));

    /// <inheritdoc/>
    public Task AllGatherAsync(Tensor output, Tensor input)
    {
        var (dt, send, recv) = AllGatherArguments(output, input);
        return Enqueue("all_gather", input.numel(), (c, s) => NcclNative.ncclAllGather(send, recv, (nuint)input.numel(), dt, c, s));
    }

    /// <inheritdoc/>
    public DeviceCollective AllGatherDeferred(Tensor output, Tensor input)
    {
        var (dt, send, recv) = AllGatherArguments(output, input);
        IntPtr done = IntPtr.Zero;
        var task = Enqueue("all_gather", input.numel(), (c, s) => NcclNative.ncclAllGather(send, recv, (nuint)input.numel(), dt, c, s), e => done = e);
        return new DeviceCollective(task, done, DeviceIndex);
    }

    /// <inheritdoc/>
    public void AllGather(IList<Tensor> outputs, Tensor input)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        ArgumentNullException.ThrowIfNull(input);
        if (outputs.Count != WorldSize)
        {
            throw new ArgumentException($"outputs must hold {WorldSize} tensors; got {outputs.Count}.", nameof(outputs));
        }

        using var all = empty(input.numel() * WorldSize, input.dtype, Device);
        AllGather(all, input);
        for (var r = 0; r < WorldSize; r++)
        {
            using var part = all.narrow(0, r * input.numel(), input.numel());
            outputs[r].copy_(part.view(input.shape));
        }
    }

    /// <inheritdoc/>
    public void ReduceScatter(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum) => Wait(ReduceScatterAsync(output, input, op));

    /// <inheritdoc/>
    public Task ReduceScatterAsync(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum)
    {
        Check(output, nameof(output));
        Check(input, nameof(input));
        CheckAvg(input, op);
        if (input.numel() != output.numel() * WorldSize || output.dtype != input.dtype)
        {
            throw new ArgumentException($"input must be {output.dtype} with {output.numel() * WorldSize} elements; got {input.dtype} with {input.numel()}.", nameof(input));
        }

        var dt = NcclNative.DataType(input.dtype, nameof(input));
        var send = TensorMemory.DataPointer(input);
        var recv = TensorMemory.DataPointer(output);
        var nop = NcclOp(op);
        return Enqueue("reduce_scatter", output.numel(), (c, s) => NcclNative.ncclReduceScatter(send, recv, (nuint)output.numel(), dt, nop, c, s));
    }

    /// <inheritdoc/>
    public void Broadcast(Tensor tensor, int root = 0) => Wait(BroadcastAsync(tensor, root));

    /// <inheritdoc/>
    public Task BroadcastAsync(Tensor tensor, int root = 0)
    {
        Check(tensor, nameof(tensor));
        if (root < 0 || root >= WorldSize)
        {
            throw new ArgumentOutOfRangeException(nameof(root), root, $"must be a rank in 0..{WorldSize - 1}.");
        }

        var dt = NcclNative.DataType(tensor.dtype, nameof(tensor));
        var p = TensorMemory.DataPointer(tensor);
        return Enqueue("broadcast", tensor.numel(), (c, s) => NcclNative.ncclBroadcast(p, p, (nuint)tensor.numel(), dt, root, c, s));
    }

    /// <inheritdoc/>
    public void Send(Tensor tensor, int dst) => Wait(SendAsync(tensor, dst));

    /// <summary><see cref="Send"/> without blocking (completes when the peer has received it).</summary>
    public Task SendAsync(Tensor tensor, int dst)
    {
        Check(tensor, nameof(tensor));
        CheckPeer(dst, nameof(dst));
        var dt = NcclNative.DataType(tensor.dtype, nameof(tensor));
        var p = TensorMemory.DataPointer(tensor);
        return Enqueue("send", tensor.numel(), (c, s) => Grouped(() => NcclNative.ncclSend(p, (nuint)tensor.numel(), dt, dst, c, s)));
    }

    /// <inheritdoc/>
    public void Recv(Tensor tensor, int src) => Wait(RecvAsync(tensor, src));

    /// <summary><see cref="Recv"/> without blocking.</summary>
    public Task RecvAsync(Tensor tensor, int src)
    {
        Check(tensor, nameof(tensor));
        CheckPeer(src, nameof(src));
        var dt = NcclNative.DataType(tensor.dtype, nameof(tensor));
        var p = TensorMemory.DataPointer(tensor);
        return Enqueue("recv", tensor.numel(), (c, s) => Grouped(() => NcclNative.ncclRecv(p, (nuint)tensor.numel(), dt, src, c, s)));
    }

    /// <summary>Sends <paramref name="send"/> to <paramref name="dst"/> and receives <paramref name="recv"/> from <paramref name="src"/> as one fused NCCL group (no ordering deadlock).</summary>
    public Task SendRecvAsync(Tensor send, int dst, Tensor recv, int src)
    {
        Check(send, nameof(send));
        Check(recv, nameof(recv));
        CheckPeer(dst, nameof(dst));
        CheckPeer(src, nameof(src));
        var sdt = NcclNative.DataType(send.dtype, nameof(send));
        var rdt = NcclNative.DataType(recv.dtype, nameof(recv));
        var sp = TensorMemory.DataPointer(send);
        var rp = TensorMemory.DataPointer(recv);
        var n = Math.Max(send.numel(), recv.numel());
        return Enqueue("send_recv", n, (c, s) => Grouped(
            () => send.numel() == 0 ? 0 : NcclNative.ncclSend(sp, (nuint)send.numel(), sdt, dst, c, s),
            () => recv.numel() == 0 ? 0 : NcclNative.ncclRecv(rp, (nuint)recv.numel(), rdt, src, c, s)));
    }

    /// <inheritdoc/>
    public void Barrier() => AllReduce(barrierToken, ReduceOp.Max); // max keeps the token at 1 however many barriers run

    /// <summary>Aborts the communicator (ncclCommAbort): in-flight collectives stop and every later call throws.</summary>
    public void Abort(string reason = "aborted by the caller")
    {
        lock (sync)
        {
            if (abortReason is not null)
            {
                return;
            }

            abortReason = reason;
            if (comm != IntPtr.Zero)
            {
                _ = NcclNative.ncclCommAbort(comm);
                comm = IntPtr.Zero;
            }
        }

        watchdog.FailAll($"rank {Rank}: {reason}");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (sync)
        {
            if (disposed)
            {
                return;
            }

            disposed = true;
        }

        // Let work in flight finish (bounded by the watchdog's timeout), then free NCCL's resources.
        var deadline = DateTime.UtcNow + options.Timeout;
        while (watchdog.InFlightCount > 0 && AbortReason is null && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(1);
        }

        if (watchdog.InFlightCount > 0 && AbortReason is null)
        {
            Abort("disposed with collectives still in flight");
        }

        watchdog.Dispose();
        lock (sync)
        {
            if (comm != IntPtr.Zero)
            {
                _ = NcclNative.ncclCommDestroy(comm);
                comm = IntPtr.Zero;
            }
        }

        barrierToken.Dispose();
        _ = CudaRuntime.cudaEventDestroy(before);
        _ = CudaRuntime.cudaStreamDestroy(stream);
    }

    private static NcclUniqueId ExchangeUniqueId(TcpStoreClient store, int rank, int worldSize, NcclOptions options)
    {
        var key = $"{options.StorePrefix}/unique_id";
        NcclUniqueId id;
        try
        {
            if (rank == 0)
            {
                var rc = NcclNative.ncclGetUniqueId(out id);
                if (rc != NcclNative.Success)
                {
                    throw new CollectiveException($"rank 0: ncclGetUniqueId failed: {NcclNative.Describe(rc, IntPtr.Zero)}.");
                }

                store.Set(key, ToBytes(id));
            }
            else
            {
                var bytes = store.Get(key, options.Timeout);
                if (bytes.Length != NcclUniqueId.Bytes)
                {
                    throw new CollectiveException($"rank {rank}: the store's NCCL unique id has {bytes.Length} bytes, not {NcclUniqueId.Bytes}.");
                }

                id = FromBytes(bytes);
            }

            // Every rank holds the id before any calls ncclCommInitRank, so a missing rank is a store timeout, not an NCCL hang.
            store.Set($"{options.StorePrefix}/joined/{rank}", "1");
            var keys = Enumerable.Range(0, worldSize).Select(r => $"{options.StorePrefix}/joined/{r}").ToList();
            if (!store.Wait(keys, options.Timeout))
            {
                var missing = Enumerable.Range(0, worldSize).Where(r => !store.Check([keys[r]]));
                throw new CollectiveException(
                    $"rank {rank}: rendezvous timed out: rank(s) {string.Join(", ", missing)} did not join the NCCL group within {options.Timeout.TotalSeconds:F0} s.");
            }
        }
        catch (StoreException ex)
        {
            throw new CollectiveException($"rank {rank}: rendezvous failed (exchanging the NCCL unique id): {ex.Message}", ex);
        }

        return id;
    }

    private static unsafe byte[] ToBytes(NcclUniqueId id) => new ReadOnlySpan<byte>(id.Internal, NcclUniqueId.Bytes).ToArray();

    private static unsafe NcclUniqueId FromBytes(byte[] bytes)
    {
        var id = default(NcclUniqueId);
        bytes.AsSpan().CopyTo(new Span<byte>(id.Internal, NcclUniqueId.Bytes));
        return id;
    }

    private static int Grouped(params Func<int>[] calls)
    {
        var rc = NcclNative.ncclGroupStart();
        if (rc != NcclNative.Success)
        {
            return rc;
        }

        foreach (var call in calls)
        {
            rc = call();
            if (rc != NcclNative.Success)
            {
                _ = NcclNative.ncclGroupEnd();
                return rc;
            }
        }

        return NcclNative.ncclGroupEnd();
    }

    private static void Wait(Task task) => task.GetAwaiter().GetResult();

    // One rank: the average is the sum (NCCL 2.28's single-rank reduce-scatter with ncclAvg left the last element of an
    // odd-length output unwritten on an H100; the sum is exact and the same value).
    private int NcclOp(ReduceOp op) => op == ReduceOp.Avg && WorldSize == 1 ? NcclNative.OpSum : NcclNative.Op(op);

    private int AsyncError()
    {
        lock (sync)
        {
            if (comm == IntPtr.Zero)
            {
                return 0;
            }

            var rc = NcclNative.ncclCommGetAsyncError(comm, out var e);
            return rc != NcclNative.Success ? rc : e is NcclNative.InProgress ? 0 : e;
        }
    }

    // Orders the NCCL call after the default stream's queued work and the default stream's later work after it; with
    // `deferred`, the default stream is left free and `deferred` gets an event of its own, recorded after the call,
    // for the caller to order the default stream on later (DeviceCollective).
    private Task Enqueue(string op, long elements, Func<IntPtr, IntPtr, int> call, Action<IntPtr>? deferred = null)
    {
        lock (sync)
        {
            if (disposed)
            {
                return Task.FromException(new ObjectDisposedException(nameof(NcclCommunicator)));
            }

            if (abortReason is not null)
            {
                return Task.FromException(new CollectiveException($"rank {Rank}: {op} on an aborted communicator ({abortReason})."));
            }

            if (elements == 0)
            {
                return Task.CompletedTask; // every rank sees the same sizes, so every rank skips it
            }

            CudaRuntime.Check(CudaRuntime.cudaSetDevice(DeviceIndex), "cudaSetDevice");
            CudaRuntime.Check(CudaRuntime.cudaEventRecord(before, IntPtr.Zero), "cudaEventRecord");
            CudaRuntime.Check(CudaRuntime.cudaStreamWaitEvent(stream, before, 0), "cudaStreamWaitEvent");
            var rc = call(comm, stream);
            if (rc != NcclNative.Success)
            {
                var message = $"rank {Rank}: {op} failed: {NcclNative.Describe(rc, comm)}.";
                return Task.FromException(rc is 4 or 5 ? new ArgumentException(message) : new CollectiveException(message));
            }

            var after = watchdog.RentEvent();
            CudaRuntime.Check(CudaRuntime.cudaEventRecord(after, stream), "cudaEventRecord");
            if (deferred is null)
            {
                CudaRuntime.Check(CudaRuntime.cudaStreamWaitEvent(IntPtr.Zero, after, 0), "cudaStreamWaitEvent");
            }
            else
            {
                // The watchdog recycles `after` once complete; the caller's wait may come later, so it gets its own event.
                CudaRuntime.Check(CudaRuntime.cudaEventCreateWithFlags(out var own, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
                CudaRuntime.Check(CudaRuntime.cudaEventRecord(own, stream), "cudaEventRecord");
                deferred(own);
            }

            return watchdog.Track($"rank {Rank}: {op}", after, null);
        }
    }

    private (int DataType, IntPtr Send, IntPtr Recv) AllGatherArguments(Tensor output, Tensor input)
    {
        Check(output, nameof(output));
        Check(input, nameof(input));
        if (output.numel() != input.numel() * WorldSize || output.dtype != input.dtype)
        {
            throw new ArgumentException($"output must be {input.dtype} with {input.numel() * WorldSize} elements; got {output.dtype} with {output.numel()}.", nameof(output));
        }

        return (NcclNative.DataType(input.dtype, nameof(input)), TensorMemory.DataPointer(input), TensorMemory.DataPointer(output));
    }

    private void Check(Tensor t, string name)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        if (t.device_type != DeviceType.CUDA || t.device_index != DeviceIndex)
        {
            throw new ArgumentException($"{name} is on {t.device}; this rank's NCCL communicator takes tensors on cuda:{DeviceIndex}.", name);
        }

        if (!t.is_contiguous())
        {
            throw new ArgumentException($"{name} must be contiguous.", name);
        }
    }

    private void CheckPeer(int r, string name)
    {
        if (r < 0 || r >= WorldSize || r == Rank)
        {
            throw new ArgumentOutOfRangeException(name, r, $"must be another rank in 0..{WorldSize - 1}.");
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
