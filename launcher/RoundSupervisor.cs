using Microsoft.Extensions.Logging;

namespace BnbDist.Launcher;

/// <summary>
/// Runs this node's workers for one rendezvous round and watches the whole round through the store: the first failure
/// anywhere (a worker's, or the host noticing a node whose heartbeat went silent) is written once to the round's
/// <c>failed</c> key, and every agent that reads it stops its workers. The round succeeds when every node has written
/// its <c>done</c> key. Every agent heartbeats while the round runs.
/// </summary>
internal sealed class RoundSupervisor(LaunchOptions options, Rendezvous rendezvous, RoundInfo info, ILogger logger)
{
    private static readonly TimeSpan BeatInterval = TimeSpan.FromMilliseconds(500);

    private readonly Dictionary<int, (long Count, DateTime ChangedAt)> heartbeats = [];

    /// <summary>Null when every node's workers succeeded; else why the round failed.</summary>
    public async Task<FailureRecord?> RunAsync(CancellationToken ct)
    {
        var store = rendezvous.Store;
        var failedKey = rendezvous.Key(info.Round, "failed");
        var doneKeys = Enumerable.Range(0, info.NNodes).Select(n => rendezvous.Key(info.Round, $"done{n}")).ToList();
        using var group = new WorkerGroup(options, info, logger);
        using var stopWaiting = new CancellationTokenSource();
        group.Start();
        var waiting = group.WaitAsync(stopWaiting.Token);
        GroupResult? local = null;
        var lastBeat = DateTime.MinValue;
        try
        {
            while (true)
            {
                if (local is null && waiting.IsCompleted)
                {
                    local = await waiting.ConfigureAwait(false);
                    if (local.Success)
                    {
                        store.Set(doneKeys[info.NodeRank], "1");
                    }
                    else
                    {
                        Report(FailureRecord.WorkerFailed(info.NodeRank, local));
                    }
                }

                if (DateTime.UtcNow - lastBeat >= BeatInterval)
                {
                    store.Add(HeartbeatKey(info.NodeRank), 1);
                    lastBeat = DateTime.UtcNow;
                }

                if (store.Check([failedKey]))
                {
                    var failure = FailureRecord.FromBytes(store.Get(failedKey));
                    if (local is null)
                    {
                        logger.LogWarning("Round {Round} failed elsewhere ({Summary}); stopping this node's workers.", info.Round, failure.Summary);
                    }

                    await StopAsync(group, waiting, stopWaiting).ConfigureAwait(false);
                    return failure;
                }

                if (local is { Success: true } && store.Check(doneKeys))
                {
                    return null;
                }

                if (rendezvous.IsHost && SilentNode() is { } silent)
                {
                    Report(FailureRecord.AgentLost(silent.Node, silent.Silence));
                    continue;
                }

                await Task.Delay(Polling.Interval, ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            logger.LogWarning("bnbrun interrupted: stopping all workers.");
            await StopAsync(group, waiting, stopWaiting).ConfigureAwait(false);
            TryReport(FailureRecord.Interrupted(info.NodeRank));
            throw;
        }
        catch (Exception ex) when (ex is Collectives.Store.StoreException or InvalidDataException)
        {
            await StopAsync(group, waiting, stopWaiting).ConfigureAwait(false);
            throw;
        }
    }

    private string HeartbeatKey(int node) => rendezvous.Key(info.Round, $"heartbeat{node}");

    /// <summary>Writes the round's failure unless another node's failure came first (the first one is the job's).</summary>
    private void Report(FailureRecord failure) =>
        rendezvous.Store.CompareSet(rendezvous.Key(info.Round, "failed"), [], failure.ToBytes());

    private void TryReport(FailureRecord failure)
    {
        try
        {
            Report(failure);
        }
        catch (Collectives.Store.StoreException)
        {
            // The store is gone too: the other nodes notice that on their own.
        }
    }

    /// <summary>The host's view of the other agents: a node whose heartbeat counter has not moved for the heartbeat timeout.</summary>
    private (int Node, TimeSpan Silence)? SilentNode()
    {
        var now = DateTime.UtcNow;
        for (var node = 1; node < info.NNodes; node++)
        {
            var count = rendezvous.Store.Add(HeartbeatKey(node), 0);
            if (!heartbeats.TryGetValue(node, out var seen) || seen.Count != count)
            {
                heartbeats[node] = (count, now);
            }
            else if (now - seen.ChangedAt > options.HeartbeatTimeout)
            {
                return (node, now - seen.ChangedAt);
            }
        }

        return null;
    }

    private static async Task StopAsync(WorkerGroup group, Task<GroupResult> waiting, CancellationTokenSource stopWaiting)
    {
        await stopWaiting.CancelAsync().ConfigureAwait(false);
        try
        {
            await waiting.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        await group.StopAsync().ConfigureAwait(false);
    }
}
