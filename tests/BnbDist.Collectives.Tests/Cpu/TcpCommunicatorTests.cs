using BnbDist.Collectives.Cpu;
using BnbDist.Tests;
using static TorchSharp.torch;

namespace BnbDist.Collectives.Tests.Cpu;

/// <summary>
/// Every CPU collective on 1–4 ranks (each rank a thread with its own real TCP connections), random sizes including
/// 0, 1 and sizes not divisible by the world size, several dtypes, against a single-process reference.
/// </summary>
public class TcpCommunicatorTests
{
    public static TheoryData<int> WorldSizes() => [1, 2, 3, 4];

    private static readonly ScalarType[] DTypes = [ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Int32, ScalarType.Int64, ScalarType.Byte];

    [Theory]
    [MemberData(nameof(WorldSizes))]
    public void AllReduceMatchesTheReferenceForEveryOpDtypeAndAwkwardSize(int world)
    {
        var sizes = new long[] { 0, 1, world + 1, 1000, 4097 };
        var inputs = Inputs(world, sizes, seed: world);
        Ranks.Run(world, comm =>
        {
            foreach (var ((n, dtype), perRank) in inputs)
            {
                foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Max, ReduceOp.Min, ReduceOp.Avg })
                {
                    if (op == ReduceOp.Avg && !perRank[0].is_floating_point())
                    {
                        continue;
                    }

                    using var t = perRank[comm.Rank].clone();
                    comm.AllReduce(t, op);
                    using var expected = Reference(perRank, op);
                    AssertClose(expected, t, $"{op} n={n} {dtype} rank {comm.Rank}");
                }
            }
        });
    }

    [Theory]
    [MemberData(nameof(WorldSizes))]
    public void AllGatherReduceScatterBroadcastSendRecvAndBarrier(int world)
    {
        var inputs = Inputs(world, [0, 1, 5, 777], seed: 10 + world);
        Ranks.Run(world, comm =>
        {
            foreach (var ((n, _), perRank) in inputs)
            {
                var mine = perRank[comm.Rank];
                using var gathered = empty(n * world, mine.dtype);
                comm.AllGather(gathered, mine);
                using var expectedCat = cat(perRank.Select(p => p.view(-1)).ToList(), 0);
                Assert.True(gathered.equal(expectedCat).all().item<bool>());

                var list = Enumerable.Range(0, world).Select(_ => empty(mine.shape, mine.dtype)).ToList();
                comm.AllGather(list, mine);
                for (var r = 0; r < world; r++)
                {
                    Assert.True(list[r].equal(perRank[r]).all().item<bool>());
                }

                // Reduce-scatter: each rank contributes world × n elements and keeps its n-element slice of the sum.
                using var big = cat(Enumerable.Repeat(mine, world).Select((t, i) => (t * (i + 1)).to_type(mine.dtype)).ToList(), 0);
                using var slice = empty(n, mine.dtype);
                comm.ReduceScatter(slice, big);
                var terms = perRank.Select(p => (p * (comm.Rank + 1)).to_type(mine.dtype)).ToArray(); // the values actually sent
                using var expectedSlice = Reference(terms, ReduceOp.Sum);
                AssertClose(expectedSlice, slice, $"reduce_scatter n={n} {mine.dtype}");

                using var b = comm.Rank == world - 1 ? perRank[world - 1].clone() : zeros_like(mine);
                comm.Broadcast(b, world - 1);
                Assert.True(b.equal(perRank[world - 1]).all().item<bool>());
            }

            if (world > 1)
            {
                using var msg = comm.Rank == 0 ? arange(10, ScalarType.Float32) : zeros(10);
                if (comm.Rank == 0)
                {
                    comm.Send(msg, 1);
                }
                else if (comm.Rank == 1)
                {
                    comm.Recv(msg, 0);
                    Assert.True(msg.equal(arange(10, ScalarType.Float32)).all().item<bool>());
                }
            }

            comm.Barrier();
        });
    }

    [Fact]
    public void AsyncCollectivesOverlapTheCallerAndKeepIssueOrder()
    {
        Ranks.Run(3, comm =>
        {
            using var a = full(100_000, comm.Rank + 1f);
            using var b = full(7, 10f * (comm.Rank + 1));
            using var g = empty(3 * 7);
            var first = comm.AllReduceAsync(a);
            var second = comm.AllGatherAsync(g, b);
            using var busy = randn(256, 256).matmul(randn(256, 256)); // caller keeps working meanwhile
            comm.Barrier();                                            // a blocking call queues behind them
            Task.WaitAll(first, second);
            Assert.Equal(6f, a[0].item<float>());
            Assert.Equal(6f, a[^1].item<float>());
            Assert.Equal([10f, 20f, 30f], new[] { g[0].item<float>(), g[7].item<float>(), g[14].item<float>() });
        });
    }

    [Fact]
    public void ARankThatFailsMakesEveryOtherRankThrowQuicklyInsteadOfHanging()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var errors = Ranks.Run(3, comm =>
        {
            if (comm.Rank == 1)
            {
                ((TcpCommunicator)comm).Abort(); // as if the process died
                return;
            }

            using var t = ones(1000);
            comm.AllReduce(t);
        }, expectFailures: true);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"took {sw.Elapsed}");
        Assert.Equal(2, errors.Count(e => e is CollectiveException));
    }

    [Fact]
    public void MismatchedSizesAreAClearErrorOnEveryRank()
    {
        var errors = Ranks.Run(2, comm =>
        {
            using var t = ones(comm.Rank == 0 ? 100 : 101);
            comm.AllReduce(t);
        }, expectFailures: true);
        Assert.Equal(2, errors.Count);
        Assert.Contains(errors, e => e.Message.Contains("different collectives or sizes", StringComparison.Ordinal) || e.Message.Contains("closed its connection", StringComparison.Ordinal));
    }

    [Fact]
    public void BadArgumentsAreArgumentExceptions()
    {
        Ranks.Run(2, comm =>
        {
            using var t = ones(4, 4).t();
            Assert.Throws<ArgumentException>(() => comm.AllReduce(t));
            using var i = ones(4, ScalarType.Int32);
            Assert.Throws<ArgumentException>(() => comm.AllReduce(i, ReduceOp.Avg));
            using var small = ones(3);
            Assert.Throws<ArgumentException>(() => comm.AllGather(small, ones(2)));
            Assert.Throws<ArgumentOutOfRangeException>(() => comm.Send(small, comm.Rank));
            comm.Barrier(); // still usable: argument errors do not abort the group
        });
    }

    private static Dictionary<(long N, ScalarType DType), Tensor[]> Inputs(int world, long[] sizes, int seed)
    {
        manual_seed(seed);
        var result = new Dictionary<(long, ScalarType), Tensor[]>();
        foreach (var n in sizes)
        {
            foreach (var dt in DTypes)
            {
                result[(n, dt)] = Enumerable.Range(0, world).Select(_ => dt is ScalarType.Int32 or ScalarType.Int64 or ScalarType.Byte
                    ? randint(0, dt == ScalarType.Byte ? 60 / Math.Max(1, world) : 1000, [n], dtype: dt)
                    : randn(n).to_type(dt)).ToArray();
            }
        }

        return result;
    }

    private static Tensor Reference(Tensor[] perRank, ReduceOp op)
    {
        var acc = perRank[0].to_type(ScalarType.Float64);
        foreach (var t in perRank.Skip(1))
        {
            using var d = t.to_type(ScalarType.Float64);
            acc = op switch
            {
                ReduceOp.Max => acc.maximum(d),
                ReduceOp.Min => acc.minimum(d),
                _ => acc + d,
            };
        }

        if (op == ReduceOp.Avg)
        {
            acc /= perRank.Length;
        }

        return acc;
    }

    private static void AssertClose(Tensor expected64, Tensor actual, string what)
    {
        using var a = actual.to_type(ScalarType.Float64);
        // Exact for integers, max and min; floating sums differ from the f64 reference only by the tensor's own rounding.
        var tol = actual.dtype switch
        {
            ScalarType.BFloat16 => 3e-2,
            ScalarType.Float32 => 1e-5,
            _ => 1e-12,
        };
        var ok = a.allclose(expected64.to_type(ScalarType.Float64), rtol: tol, atol: tol);
        Assert.True(ok, what);
    }
}
