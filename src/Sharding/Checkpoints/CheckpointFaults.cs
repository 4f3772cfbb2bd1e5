namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Fault-injection points of a save, for crash tests: a test process installs hooks that kill it (SIGKILL) at a named
/// stage or after some bytes of a file, then checks that the previous checkpoint still loads. Unset, they cost a null check.
/// </summary>
internal static class CheckpointFaults
{
    /// <summary>Called at each named stage of a save (e.g. <c>rank-0-of-2.safetensors:written</c>, <c>index.json:renamed</c>).</summary>
    public static Action<string>? OnStage { get; set; }

    /// <summary>Called after each chunk handed to the OS, with the file being written and its bytes so far.</summary>
    public static Action<string, long>? OnBytes { get; set; }

    public static void Stage(string name) => OnStage?.Invoke(name);

    public static void Bytes(string file, long written) => OnBytes?.Invoke(file, written);
}
