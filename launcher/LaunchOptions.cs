namespace BnbDist.Launcher;

/// <summary>What <c>bnbrun</c> was asked to do (torchrun's flags).</summary>
internal sealed record LaunchOptions
{
    public int NProcPerNode { get; init; } = 1;

    /// <summary>Fewest nodes a rendezvous round starts with (<c>--nnodes MIN:MAX</c>; MIN = MAX for a fixed count).</summary>
    public int MinNodes { get; init; } = 1;

    /// <summary>Most nodes a rendezvous round admits; a round closes at once when this many have joined.</summary>
    public int MaxNodes { get; init; } = 1;

    /// <summary>Fixed node count: ranks follow <c>--node-rank</c>. Elastic (MIN:MAX): ranks follow the join order.</summary>
    public bool Elastic => MinNodes != MaxNodes;

    /// <summary>This node's index for a fixed node count (0 hosts the store); unused when elastic.</summary>
    public int NodeRank { get; init; }

    public string MasterAddr { get; init; } = "127.0.0.1";

    public int MasterPort { get; init; } = 29500;

    public int MaxRestarts { get; init; }

    public string Backend { get; init; } = "auto";

    public string? LogDir { get; init; }

    public bool Tee { get; init; }

    public bool Standalone { get; init; }

    public TimeSpan GracePeriod { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>After MIN nodes joined, how long a round stays open for more (torchrun's last-call timeout).</summary>
    public TimeSpan LastCall { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a node waits for a round to reach MIN nodes (or to be let into one).</summary>
    public TimeSpan RendezvousTimeout { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>An agent whose heartbeat is older than this is taken for dead, and its round fails.</summary>
    public TimeSpan HeartbeatTimeout { get; init; } = TimeSpan.FromSeconds(15);

    public required string Program { get; init; }

    public IReadOnlyList<string> ProgramArgs { get; init; } = [];

    public required string RunId { get; init; }
}
