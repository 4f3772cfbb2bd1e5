namespace BnbDist.Launcher;

/// <summary>What <c>bnbrun</c> was asked to do (torchrun's flags).</summary>
internal sealed record LaunchOptions
{
    public int NProcPerNode { get; init; } = 1;

    public int NNodes { get; init; } = 1;

    public int NodeRank { get; init; }

    public string MasterAddr { get; init; } = "127.0.0.1";

    public int MasterPort { get; init; } = 29500;

    public int MaxRestarts { get; init; }

    public string Backend { get; init; } = "auto";

    public string? LogDir { get; init; }

    public bool Tee { get; init; }

    public bool Standalone { get; init; }

    public TimeSpan GracePeriod { get; init; } = TimeSpan.FromSeconds(3);

    public required string Program { get; init; }

    public IReadOnlyList<string> ProgramArgs { get; init; } = [];

    public required string RunId { get; init; }

    public int WorldSize => NNodes * NProcPerNode;
}
