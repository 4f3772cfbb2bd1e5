using BnbDist.Collectives;
using BnbDist.Collectives.Cpu;
using BnbDist.Collectives.Store;
using BnbDist.Sharding.Checkpoints;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>
/// Runs a body once per rank, each rank a thread with its own real TCP communicator (world size 1: no communicator, as
/// a single process would run), and returns each rank's result or exception.
/// </summary>
internal static class RankThreads
{
    public static (T? Result, Exception? Error)[] Run<T>(int world, Func<ICommunicator?, T> body)
    {
        if (world == 1)
        {
            try
            {
                return [(body(null), null)];
            }
            catch (Exception ex)
            {
                return [(default, ex)];
            }
        }

        var server = new TcpStoreServer().Start();
        var results = new (T? Result, Exception? Error)[world];
        var threads = new Thread[world];
        for (var rank = 0; rank < world; rank++)
        {
            var r = rank;
            threads[r] = new Thread(() =>
            {
                try
                {
                    using var store = TcpStoreClient.Connect("127.0.0.1", server.EndPoint.Port);
                    using var comm = TcpCommunicator.Create(store, r, world, new CommunicatorOptions { Timeout = TimeSpan.FromSeconds(20) });
                    results[r] = (body(comm), null);
                }
                catch (Exception ex)
                {
                    results[r] = (default, ex);
                }
            });
            threads[r].Start();
        }

        foreach (var t in threads)
        {
            t.Join();
        }

        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return results;
    }

    /// <summary>Every rank's result; any rank's failure fails the test with all the failures.</summary>
    public static T[] RunAll<T>(int world, Func<ICommunicator?, T> body)
    {
        var results = Run(world, body);
        var errors = results.Where(r => r.Error is not null).Select(r => r.Error!).ToList();
        return errors.Count > 0 ? throw new AggregateException(errors) : [.. results.Select(r => r.Result!)];
    }

    /// <summary>Saves the test state of <paramref name="step"/> with <paramref name="world"/> ranks under <paramref name="root"/>.</summary>
    public static string Save(string root, long step, int world, CheckpointSaveOptions? options = null) =>
        RunAll(world, comm =>
        {
            using var ckpt = new ShardedCheckpointer(root, comm, options);
            return ckpt.Save(step, CheckpointTestData.State(step, comm?.Rank ?? 0, world));
        })[0];

    /// <summary>Loads with <paramref name="world"/> ranks and returns each rank's difference from the test state of <paramref name="step"/> (null: identical).</summary>
    public static string?[] LoadDifferences(string root, long step, int world, CheckpointLoadOptions? options = null) =>
        RunAll(world, comm =>
        {
            using var ckpt = new ShardedCheckpointer(root, comm);
            using var loaded = ckpt.Load(options);
            return CheckpointTestData.Difference(loaded, step);
        });
}
