// Test worker: joins the process group that DistributedEnvironment picks (bnbrun --backend auto|cpu|nccl) and checks
// every collective against a reference computed on the CPU from all ranks' inputs (each rank can rebuild every other
// rank's input: values are small integers, so sums are exact in every dtype and reduction order). Prints
// "rank R: backend B (reason)" and, when all pass, "rank R: N checks passed"; exits 1 on the first mismatch.
//   --timeout-test   rank 1 skips one all-reduce; the others must get a CollectiveException within the timeout
//   --timeout-s N    time limit of the group and of each collective (default 60)
//   --large N        the large case's element count for f32/bf16 (default 2^20 + 3; 0 leaves it out)
using System.Diagnostics;
using BnbDist.Collectives;
using BnbDist.Collectives.Nccl;
using static TorchSharp.torch;

int Arg(string name, int fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
}

return DistributedEnvironment.RunWorker(env =>
{
    var (backend, reason) = env.ChooseBackend();
    Console.WriteLine($"rank {env.Rank}: backend {backend} ({reason})");
    var (store, comm) = env.InitProcessGroup(TimeSpan.FromSeconds(Arg("--timeout-s", 60)));
    using (store)
    using (comm)
    {
        var device = comm is NcclCommunicator nccl ? nccl.Device : CPU;
        if (args.Contains("--timeout-test"))
        {
            return TimeoutTest(comm, device);
        }

        var checks = new Checks(comm, device, Arg("--large", (1 << 20) + 3));
        checks.RunAll();
        Console.WriteLine($"rank {env.Rank}: {checks.Passed} checks passed on {comm.Backend} ({device})");
    }

    return 0;
});

// A collective that one rank never joins must fail on the others within the timeout instead of hanging.
static int TimeoutTest(ICommunicator comm, Device device)
{
    using var t = ones(1024, ScalarType.Float32, device);
    comm.AllReduce(t); // everyone: the group works
    if (comm.Rank == 1)
    {
        Thread.Sleep(TimeSpan.FromSeconds(90)); // skips the next all-reduce; bnbrun stops it when rank 0 fails
        return 0;
    }

    var sw = Stopwatch.StartNew();
    try
    {
        comm.AllReduce(t);
    }
    catch (CollectiveException ex)
    {
        Console.WriteLine($"rank {comm.Rank}: timed out as expected after {sw.Elapsed.TotalSeconds:F1} s: {ex.Message}");
        try
        {
            comm.AllReduce(t);
            Console.WriteLine($"rank {comm.Rank}: a collective after the abort did not throw");
            return 3;
        }
        catch (CollectiveException)
        {
            return 7; // the agreed "timed out, then refused" code the test expects
        }
    }

    Console.WriteLine($"rank {comm.Rank}: the all-reduce returned although rank 1 never joined it");
    return 2;
}

internal sealed class Checks(ICommunicator comm, Device device, long large)
{
    private static readonly ScalarType[] FloatTypes = [ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16, ScalarType.Float64];
    private static readonly ScalarType[] IntTypes = [ScalarType.Int32, ScalarType.Int64];
    private int caseId;

    public int Passed { get; private set; }

    private int W => comm.WorldSize;

    public void RunAll()
    {
        foreach (var dt in FloatTypes.Concat(IntTypes))
        {
            // One large size (several NCCL chunks, uneven ring chunks) for the common training dtypes; small edge sizes for all.
            long[] sizes = large > 0 && dt is ScalarType.Float32 or ScalarType.BFloat16 ? [0, 1, 7, (5 * W) + 3, 4099, large] : [0, 1, 7, (5 * W) + 3, 4099];
            foreach (var n in sizes)
            {
                using var scope = NewDisposeScope();
                foreach (var op in Enum.GetValues<ReduceOp>())
                {
                    if (op != ReduceOp.Avg || IsFloat(dt))
                    {
                        AllReduce(dt, n, op);
                    }
                }

                AllGather(dt, n);
                ReduceScatter(dt, n, ReduceOp.Sum);
                ReduceScatter(dt, n, ReduceOp.Max);
                if (IsFloat(dt))
                {
                    ReduceScatter(dt, n, ReduceOp.Avg);
                }

                for (var root = 0; root < W; root++)
                {
                    Broadcast(dt, n, root);
                }
            }
        }

        AllGather(ScalarType.Byte, 1000);
        Broadcast(ScalarType.Byte, 1000, W - 1);
        AllGatherList(ScalarType.Float32, 33);
        SendRecv(ScalarType.BFloat16, 4099);
        AsyncInIssueOrder();
        if (comm is IDeviceStreamCommunicator streams)
        {
            DeferredAllGather(streams);
        }

        comm.Barrier();
        Passed++;
    }

    private void AllReduce(ScalarType dt, long n, ReduceOp op)
    {
        var id = ++caseId;
        using var t = Input(comm.Rank, id, n, dt);
        comm.AllReduce(t, op);
        Expect($"all_reduce {op} {dt} n={n}", t, Reduce(Enumerable.Range(0, W).Select(r => Input(r, id, n, dt, CPU)), op, dt), op == ReduceOp.Avg);
    }

    private void AllGather(ScalarType dt, long n)
    {
        var id = ++caseId;
        using var input = Input(comm.Rank, id, n, dt);
        using var output = full(n * W, 99, dt, device);
        comm.AllGather(output, input);
        Expect($"all_gather {dt} n={n}", output, cat(Enumerable.Range(0, W).Select(r => Input(r, id, n, dt, CPU)).ToList(), 0), false);
    }

    private void AllGatherList(ScalarType dt, long n)
    {
        var id = ++caseId;
        using var input = Input(comm.Rank, id, n, dt);
        var outputs = Enumerable.Range(0, W).Select(_ => full(n, 99, dt, device)).ToList();
        comm.AllGather(outputs, input);
        for (var r = 0; r < W; r++)
        {
            Expect($"all_gather(list) {dt} n={n} part {r}", outputs[r], Input(r, id, n, dt, CPU), false);
        }
    }

    private void ReduceScatter(ScalarType dt, long n, ReduceOp op)
    {
        var id = ++caseId;
        using var input = Input(comm.Rank, id, n * W, dt);
        using var output = full(n, 99, dt, device);
        comm.ReduceScatter(output, input, op);
        using var all = Reduce(Enumerable.Range(0, W).Select(r => Input(r, id, n * W, dt, CPU)), op, dt);
        Expect($"reduce_scatter {op} {dt} n={n}", output, all.narrow(0, comm.Rank * n, n), op == ReduceOp.Avg);
    }

    private void Broadcast(ScalarType dt, long n, int root)
    {
        var id = ++caseId;
        using var t = Input(comm.Rank, id, n, dt);
        comm.Broadcast(t, root);
        Expect($"broadcast from {root} {dt} n={n}", t, Input(root, id, n, dt, CPU), false);
    }

    private void SendRecv(ScalarType dt, long n)
    {
        var id = ++caseId; // on every rank: later cases' inputs depend on the count
        if (W < 2 || comm.Rank > 1)
        {
            return;
        }

        var peer = 1 - comm.Rank;
        using var mine = Input(comm.Rank, id, n, dt);
        using var got = full(n, 99, dt, device);
        if (comm.Rank == 0)
        {
            comm.Send(mine, peer);
            comm.Recv(got, peer);
        }
        else
        {
            comm.Recv(got, peer);
            comm.Send(mine, peer);
        }

        Expect($"send/recv {dt} n={n}", got, Input(peer, id, n, dt, CPU), false);
    }

    // Three async collectives in flight at once complete in issue order with the right results.
    private void AsyncInIssueOrder()
    {
        var ids = new[] { ++caseId, ++caseId, ++caseId };
        var ts = ids.Select(id => Input(comm.Rank, id, 1 << 16, ScalarType.Float32)).ToArray();
        var tasks = new[] { comm.AllReduceAsync(ts[0]), comm.AllReduceAsync(ts[1], ReduceOp.Max), comm.BroadcastAsync(ts[2], W - 1) };
        Task.WaitAll(tasks);
        Expect("async all_reduce sum", ts[0], Reduce(Enumerable.Range(0, W).Select(r => Input(r, ids[0], 1 << 16, ScalarType.Float32, CPU)), ReduceOp.Sum, ScalarType.Float32), false);
        Expect("async all_reduce max", ts[1], Reduce(Enumerable.Range(0, W).Select(r => Input(r, ids[1], 1 << 16, ScalarType.Float32, CPU)), ReduceOp.Max, ScalarType.Float32), false);
        Expect("async broadcast", ts[2], Input(W - 1, ids[2], 1 << 16, ScalarType.Float32, CPU), false);
        foreach (var t in ts)
        {
            t.Dispose();
        }
    }

    // FSDP's prefetch path: the all-gather leaves the default stream free (a matmul queued after it runs meanwhile);
    // after OrderDefaultStream, default-stream reads see the gathered values with no host wait in between.
    private void DeferredAllGather(IDeviceStreamCommunicator streams)
    {
        var id = ++caseId;
        const long n = (1 << 20) + 5;
        using var input = Input(comm.Rank, id, n, ScalarType.BFloat16);
        using var output = full(n * W, 99, ScalarType.BFloat16, device);
        using var a = ones(2048, 2048, device: device);
        using var g = streams.AllGatherDeferred(output, input);
        using (var busy = a.matmul(a))
        {
            g.OrderDefaultStream();
        }

        using var copy = output.clone(); // default-stream work after the ordering
        Expect("deferred all_gather bf16", copy, cat(Enumerable.Range(0, W).Select(r => Input(r, id, n, ScalarType.BFloat16, CPU)).ToList(), 0), false);
        g.Completion.GetAwaiter().GetResult();
    }

    private Tensor Input(int rank, int id, long n, ScalarType dt, Device? on = null)
    {
        // Small integers (-8..8, or 0..16 for bytes): exact in every dtype, sums of 8 ranks exact even in bf16.
        using var i = arange(n, ScalarType.Int64);
        using var v = ((i * 7) + (rank * 13) + (id * 5)).remainder(17);
        using var shifted = dt == ScalarType.Byte ? v.alias() : v - 8;
        return shifted.to(dt).to(on ?? device);
    }

    private static Tensor Reduce(IEnumerable<Tensor> inputs, ReduceOp op, ScalarType dt)
    {
        var list = inputs.ToList();
        using var stacked = stack(list.Select(t => t.to(ScalarType.Float64)).ToList(), 0);
        using var r = op switch
        {
            ReduceOp.Sum => stacked.sum(0L),
            ReduceOp.Avg => stacked.mean([0L]),
            ReduceOp.Max => stacked.amax([0L]),
            _ => stacked.amin([0L]),
        };
        foreach (var t in list)
        {
            t.Dispose();
        }

        return op == ReduceOp.Avg ? r.alias() : r.to(dt);
    }

    private void Expect(string what, Tensor actual, Tensor expected, bool approximate)
    {
        using var got = actual.cpu().to(ScalarType.Float64).reshape(-1);
        using var want = expected.to(ScalarType.Float64).reshape(-1);
        var ok = got.numel() == want.numel() && (approximate
            ? got.allclose(want, rtol: 1e-2, atol: 1e-2)
            : got.allclose(want, rtol: 0, atol: 0));
        expected.Dispose();
        if (!ok)
        {
            var bad = got.numel() == want.numel() ? (got - want).abs().argmax().item<long>() : -1;
            throw new InvalidOperationException(bad < 0
                ? $"rank {comm.Rank}: {what}: {got.numel()} elements where {want.numel()} were expected"
                : $"rank {comm.Rank}: {what}: element {bad} is {got[bad].item<double>()}, expected {want[bad].item<double>()}");
        }

        Passed++;
    }

    private static bool IsFloat(ScalarType dt) => dt is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64;
}
