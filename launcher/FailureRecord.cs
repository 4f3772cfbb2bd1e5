using System.Text.Json;

namespace BnbDist.Launcher;

/// <summary>
/// Why a rendezvous round failed, as every node's agent reads it from the store: the first failing worker (its node,
/// global rank, exit code and error record), a node whose agent stopped heartbeating, or an interrupted agent.
/// </summary>
internal sealed record FailureRecord(int Node, int Rank, int ExitCode, string? Error, string Summary)
{
    public static FailureRecord WorkerFailed(int node, GroupResult result) =>
        new(node, result.FailedRank, result.ExitCode, result.Error,
            $"rank {result.FailedRank} failed with exit code {result.ExitCode} on node {node}" + (result.Error is null ? " (no error record)." : $":\n{result.Error}"));

    public static FailureRecord AgentLost(int node, TimeSpan silence) =>
        new(node, -1, 1, null, $"the agent of node {node} stopped heartbeating (no sign of life for {silence.TotalSeconds:F1} s).");

    public static FailureRecord Interrupted(int node) =>
        new(node, -1, 130, null, $"the agent of node {node} was interrupted (SIGINT/SIGTERM).");

    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this);

    public static FailureRecord FromBytes(byte[] bytes) =>
        JsonSerializer.Deserialize<FailureRecord>(bytes) ?? throw new InvalidDataException("empty failure record in the store.");
}
