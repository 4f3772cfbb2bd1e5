using System.Globalization;
using BnbDist.Collectives.Store;
using Microsoft.Extensions.Logging;

namespace BnbDist.Launcher;

/// <summary>This node's place in one rendezvous round: the round number (= restart count), node rank and node count.</summary>
internal sealed record RoundInfo(int Round, int NodeRank, int NNodes);

/// <summary>
/// torchrun's dynamic rendezvous over the TCP store. The store host (node 0) opens round r; other agents join it in
/// order (an atomic counter gives node ranks 1, 2, ...; a fixed <c>--nnodes N</c> keeps <c>--node-rank</c>). The host
/// closes the round when MAX nodes joined, or when MIN joined and the last-call time passed; the round's node count is
/// then fixed, and an agent that joined too late waits for the next round. Every wait is bounded by the rendezvous
/// timeout. Keys live under <c>bnbrun/RUN_ID/</c>.
/// </summary>
internal sealed class Rendezvous(TcpStoreClient store, LaunchOptions options, bool isHost, ILogger logger)
{
    public bool IsHost => isHost;

    public TcpStoreClient Store => store;

    /// <summary>A key of round <paramref name="round"/>.</summary>
    public string Key(int round, string name) => $"bnbrun/{options.RunId}/round{round}/{name}";

    private string JobKey(string name) => $"bnbrun/{options.RunId}/{name}";

    /// <summary>
    /// Joins round <paramref name="round"/> (a fresh non-host agent passes -1: the round now open), or a later one if it
    /// is full. Null when the job finished while this agent waited to be let in.
    /// </summary>
    /// <exception cref="TimeoutException">The round did not reach MIN nodes, or this agent was not let in, within the rendezvous timeout.</exception>
    public async Task<RoundInfo?> JoinAsync(int round, CancellationToken ct)
    {
        return isHost ? await HostRoundAsync(round, ct).ConfigureAwait(false) : await JoinRoundAsync(round, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Ends the job on this node: the host publishes the exit code (releasing agents still waiting to join) and keeps
    /// the store up until every other agent has read the outcome (bounded by the heartbeat timeout); others acknowledge.
    /// </summary>
    public async Task FinishAsync(RoundInfo info, int exitCode, CancellationToken ct)
    {
        if (!isHost)
        {
            Acknowledge(info.Round);
            return;
        }

        // Every agent that joined the last round, in it or too late for it, acknowledges before the store goes away.
        store.Set(JobKey("finished"), exitCode.ToString(CultureInfo.InvariantCulture));
        var (acks, joined) = (Key(info.Round, "acks"), Key(info.Round, "joined"));
        if (!await Polling.UntilAsync(() => store.Add(acks, 0) >= store.Add(joined, 0), options.HeartbeatTimeout, ct).ConfigureAwait(false))
        {
            logger.LogWarning("Not every node acknowledged the end of the job within {Timeout} s; closing the store anyway.", options.HeartbeatTimeout.TotalSeconds);
        }
    }

    private async Task<RoundInfo> HostRoundAsync(int round, CancellationToken ct)
    {
        store.Set(JobKey("current"), Str(round));
        store.Set(Key(round, "open"), "1");
        Claim(round, 0);
        var joinedKey = Key(round, "joined");
        DateTime? minReachedAt = null;
        var nodes = 1;
        var closed = await Polling.UntilAsync(() =>
        {
            nodes = (int)Math.Min(1 + store.Add(joinedKey, 0), options.MaxNodes);
            if (nodes >= options.MaxNodes)
            {
                return true;
            }

            if (nodes >= options.MinNodes)
            {
                minReachedAt ??= DateTime.UtcNow;
                return DateTime.UtcNow - minReachedAt >= options.LastCall;
            }

            return false;
        }, options.RendezvousTimeout, ct).ConfigureAwait(false);
        if (!closed)
        {
            throw new TimeoutException($"rendezvous round {round} timed out after {options.RendezvousTimeout.TotalSeconds:F0} s: " +
                                       $"{nodes} of at least {options.MinNodes} node(s) joined (--nnodes, --rdzv-timeout).");
        }

        store.Set(Key(round, "closed"), Str(nodes));
        logger.LogInformation("Rendezvous round {Round} closed with {Nodes} node(s) (--nnodes {Min}:{Max}).", round, nodes, options.MinNodes, options.MaxNodes);
        return new RoundInfo(round, 0, nodes);
    }

    private async Task<RoundInfo?> JoinRoundAsync(int round, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + options.RendezvousTimeout;
        TimeSpan Left() => deadline - DateTime.UtcNow > TimeSpan.Zero ? deadline - DateTime.UtcNow : TimeSpan.Zero;
        if (round < 0)
        {
            var current = JobKey("current");
            if (!await Polling.UntilAsync(() => store.Check([current]), Left(), ct).ConfigureAwait(false))
            {
                throw new TimeoutException($"rendezvous timed out after {options.RendezvousTimeout.TotalSeconds:F0} s: node 0 opened no round.");
            }

            round = int.Parse(store.GetString(current), CultureInfo.InvariantCulture);
        }

        for (; ; round++)
        {
            var order = store.Add(Key(round, "joined"), 1);
            var nodeRank = options.Elastic ? (int)order : options.NodeRank;
            var closedKey = Key(round, "closed");
            if (!await Polling.UntilAsync(() => store.Check([closedKey]), Left(), ct).ConfigureAwait(false))
            {
                throw new TimeoutException($"rendezvous round {round} timed out after {options.RendezvousTimeout.TotalSeconds:F0} s waiting for node 0 to close it.");
            }

            var nodes = int.Parse(store.GetString(closedKey), CultureInfo.InvariantCulture);
            if (nodeRank < nodes)
            {
                Claim(round, nodeRank);
                logger.LogInformation("Joined rendezvous round {Round} as node {Node} of {Nodes}.", round, nodeRank, nodes);
                return new RoundInfo(round, nodeRank, nodes);
            }

            logger.LogInformation("Rendezvous round {Round} closed with {Nodes} node(s) before this node joined; waiting for the next round.", round, nodes);
            var (next, finished) = (Key(round + 1, "open"), JobKey("finished"));
            if (!await Polling.UntilAsync(() => store.Check([next]) || store.Check([finished]), Left(), ct).ConfigureAwait(false))
            {
                throw new TimeoutException($"no rendezvous round after {round} opened within {options.RendezvousTimeout.TotalSeconds:F0} s (this node arrived late).");
            }

            if (store.Check([finished]))
            {
                Acknowledge(round);
                return null;
            }
        }
    }

    private void Acknowledge(int round)
    {
        try
        {
            store.Add(Key(round, "acks"), 1);
        }
        catch (StoreException)
        {
            // Node 0 stopped waiting for acknowledgements (its bound passed): the outcome is known anyway.
        }
    }

    /// <summary>Takes node rank <paramref name="node"/> in the round; two agents with one <c>--node-rank</c> are an error.</summary>
    private void Claim(int round, int node)
    {
        var me = System.Text.Encoding.UTF8.GetBytes($"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}");
        var holder = store.CompareSet(Key(round, $"node{node}"), [], me);
        if (!holder.AsSpan().SequenceEqual(me))
        {
            throw new InvalidOperationException($"node rank {node} of rendezvous round {round} is taken by another agent " +
                                                $"({System.Text.Encoding.UTF8.GetString(holder)}); give every node its own --node-rank.");
        }
    }

    private static string Str(int v) => v.ToString(CultureInfo.InvariantCulture);
}
