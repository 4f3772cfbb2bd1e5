using BnbDist.Collectives;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Collective save and load of sharded checkpoints under one root folder (shared by all ranks): every rank calls
/// <see cref="Save"/>/<see cref="SaveAsync"/>/<see cref="Load"/> with the same arguments, in the same order.
/// </summary>
/// <remarks>
/// <para>
/// A save writes <c>ROOT/step-K/rank-R-of-N.safetensors</c> on every rank and <c>replicated.safetensors</c> on rank 0,
/// each under a temporary name, fsynced and renamed; the ranks then exchange what they wrote (sizes, checksums,
/// offsets), and rank 0 writes <c>index.json</c> last, then the <c>latest</c> pointer, then deletes checkpoints beyond
/// <see cref="CheckpointSaveOptions.KeepLast"/>. A folder without a valid index is not a checkpoint, so a crash at any
/// point leaves the previous checkpoint as the one that loads.
/// </para>
/// <para>
/// Every failure (bad tensors on one rank, a full disk, inconsistent ranks) is raised on every rank as a
/// <see cref="CheckpointException"/>; no rank is left waiting in a collective.
/// </para>
/// <para>
/// An async save runs its collectives on a background task: give this checkpointer a communicator that nothing else
/// uses meanwhile (a second process group, as PyTorch's async save needs its own gloo group), or wait for the save
/// before the next collective on a shared one.
/// </para>
/// </remarks>
public sealed class ShardedCheckpointer : IDisposable, IAsyncDisposable
{
    private readonly ICommunicator? comm;
    private readonly CheckpointSaveOptions options;
    private readonly ILogger logger;
    private readonly HostBufferPool asyncBuffers = new();
    private Task pending = Task.CompletedTask;

    /// <summary>Creates a checkpointer for <paramref name="root"/>; without a communicator it is rank 0 of 1.</summary>
    public ShardedCheckpointer(string root, ICommunicator? communicator = null, CheckpointSaveOptions? options = null, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = Path.GetFullPath(root);
        comm = communicator;
        this.options = options ?? new CheckpointSaveOptions();
        this.logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The root folder.</summary>
    public string Root { get; }

    /// <summary>This rank.</summary>
    public int Rank => comm?.Rank ?? 0;

    /// <summary>Ranks.</summary>
    public int WorldSize => comm?.WorldSize ?? 1;

    /// <summary>
    /// Saves <paramref name="state"/> as step <paramref name="step"/> (collective) and returns the checkpoint folder once
    /// it is committed. Waits for an async save still running first.
    /// </summary>
    public string Save(long step, CheckpointState state)
    {
        var (snap, local) = Snapshot(step, state, null);
        return SaveCore(step, snap, local);
    }

    /// <summary>
    /// Copies <paramref name="state"/>'s tensors to host memory, then returns while the files are written and committed
    /// in the background; the task completes with the checkpoint folder (or the save's error). A save still running is
    /// waited for first.
    /// </summary>
    public Task<string> SaveAsync(long step, CheckpointState state)
    {
        var pool = options.ReuseAsyncBuffers ? asyncBuffers : new HostBufferPool();
        var (snap, local) = Snapshot(step, state, pool);
        var task = Task.Run(() =>
        {
            try
            {
                return SaveCore(step, snap, local);
            }
            finally
            {
                if (pool != asyncBuffers)
                {
                    pool.Dispose();
                }
            }
        });
        pending = task;
        return task;
    }

    /// <summary>Waits for the async save in flight (if any) and rethrows its failure.</summary>
    public Task WaitAsync() => pending;

    /// <summary>
    /// Loads a checkpoint (collective): the latest complete one, or <see cref="CheckpointLoadOptions.Step"/>. Saved with
    /// another world size, each rank reads just the byte ranges of the saved slices that overlap its new slice. With
    /// <see cref="CheckpointLoadOptions.FallbackToPrevious"/>, a checkpoint that is corrupt or incomplete on any rank is
    /// skipped (logged) for the previous complete one, the same on every rank.
    /// </summary>
    /// <param name="options">Which checkpoint and what to check.</param>
    /// <param name="into">
    /// This rank's existing slices (e.g. FullyShard's) to fill in place, matched by name; they must have the checkpoint's
    /// dtype, global shape and atoms, laid out for this world. Saves allocating (and, for CPU tensors, copying) them again.
    /// Sharded tensors not listed are returned as new tensors. If the load fails, their contents are unspecified.
    /// </param>
    public LoadedCheckpoint Load(CheckpointLoadOptions? options = null, IReadOnlyList<ShardedTensor>? into = null)
    {
        WaitForPrevious();
        var o = options ?? new CheckpointLoadOptions();
        List<long> candidates = Rank != 0 ? [] : o.Step is { } s ? [s] : [.. CheckpointCatalog.LoadOrder(Root)];
        var skipped = new List<string>();
        for (var i = 0; ; i++)
        {
            var step = long.Parse(CollectiveExchange.Broadcast(comm, i < candidates.Count ? $"{candidates[i]}" : "-1"), System.Globalization.CultureInfo.InvariantCulture);
            if (step < 0)
            {
                throw new CheckpointException(CheckpointError.Incomplete, Root, null,
                    skipped.Count == 0 ? "no complete checkpoint to load." : $"no loadable checkpoint; skipped: {string.Join(" | ", skipped)}");
            }

            var folder = CheckpointPaths.StepFolder(Root, step);
            LoadedCheckpoint? loaded = null;
            CheckpointException? error = null;
            var verdict = string.Empty;
            try
            {
                loaded = LoadedCheckpoint.Read(folder, Rank, WorldSize, o, skipped, into);
            }
            catch (CheckpointException ex)
            {
                error = ex;
                verdict = (ex.Error is CheckpointError.Mismatch ? "fatal|" : "skip|") + ex.Message;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                error = new CheckpointException(CheckpointError.Corrupt, folder, null, ex.Message, ex);
                verdict = "skip|" + ex.Message;
            }
            catch (Exception ex)
            {
                // Anything else still reaches the exchange below, so the other ranks fail too instead of waiting.
                error = new CheckpointException(CheckpointError.Corrupt, folder, null, $"{ex.GetType().Name}: {ex.Message}", ex);
                verdict = "fatal|" + error.Message;
            }

            var verdicts = CollectiveExchange.AllGatherText(comm, verdict);
            if (verdicts.All(v => v.Length == 0))
            {
                if (skipped.Count > 0)
                {
                    logger.LogWarning("Loaded checkpoint step {Step} after skipping newer ones: {Skipped}", step, string.Join(" | ", skipped));
                }

                return loaded!;
            }

            loaded?.Dispose();
            var problems = CollectiveExchange.Problems(verdicts.Select(v => v.Length == 0 ? v : v[(v.IndexOf('|', StringComparison.Ordinal) + 1)..]));
            if (!o.FallbackToPrevious || o.Step is not null || verdicts.Any(v => v.StartsWith("fatal|", StringComparison.Ordinal)))
            {
                throw error ?? new CheckpointException(CheckpointError.Corrupt, folder, null, $"another rank could not load it: {problems}");
            }

            skipped.Add($"step {step}: {problems}");
            logger.LogWarning("Checkpoint step {Step} is unusable ({Problems}); falling back to the previous complete one", step, problems);
        }
    }

    /// <summary>Waits for the async save in flight (errors are logged; <see cref="WaitAsync"/> rethrows them) and frees the async host buffers.</summary>
    public void Dispose()
    {
        WaitForPrevious();
        asyncBuffers.Dispose();
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is CheckpointException or CollectiveException or IOException)
        {
            logger.LogError(ex, "Async checkpoint save failed");
        }

        asyncBuffers.Dispose();
    }

    private void WaitForPrevious()
    {
        try
        {
            pending.GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is CheckpointException or CollectiveException or IOException)
        {
            logger.LogError(ex, "Async checkpoint save failed");
        }
    }

    /// <summary>
    /// Waits for the previous save, then checks and captures this rank's tensors. A bad state is not thrown here: the
    /// save's first exchange raises it on every rank, so no rank is left waiting.
    /// </summary>
    private (SaveSnapshot? Snapshot, Exception? Error) Snapshot(long step, CheckpointState state, HostBufferPool? pool)
    {
        WaitForPrevious();
        try
        {
            return (SaveSnapshot.Take(state, Rank, WorldSize, pool, CheckpointPaths.StepFolder(Root, step)), null);
        }
        catch (Exception ex)
        {
            return (null, ex);
        }
    }

    private string SaveCore(long step, SaveSnapshot? snap, Exception? localError)
    {
        var folder = CheckpointPaths.StepFolder(Root, step);

        // 1. Every rank's tensors are sound, and rank 0 has made the step folder ready.
        var problems = CollectiveExchange.Problems(CollectiveExchange.AllGatherText(comm, localError?.Message ?? string.Empty));
        if (problems.Length > 0)
        {
            throw localError as CheckpointException ?? new CheckpointException(CheckpointError.SaveFailed, folder, null, problems, localError);
        }

        var source = snap ?? throw new InvalidOperationException("no snapshot and no error.");

        var prepared = string.Empty;
        if (Rank == 0)
        {
            prepared = Attempt(() => CheckpointRetention.Prepare(Root, step, options.Overwrite));
        }

        prepared = CollectiveExchange.Broadcast(comm, prepared);
        if (prepared.Length > 0)
        {
            throw new CheckpointException(CheckpointError.SaveFailed, folder, null, $"rank 0 could not prepare the folder: {prepared}");
        }

        // 2. Every rank writes its files; the manifests (what landed where, with checksums) go to every rank.
        RankManifest manifest;
        try
        {
            manifest = RankFileWriter.Write(folder, Rank, WorldSize, source.Shards, source.Replicated, source.Extras);
        }
        catch (Exception ex)
        {
            manifest = RankManifest.Failed(Rank, ex); // reported on every rank by the exchange below
        }

        var manifests = CollectiveExchange.AllGather(comm, manifest.ToUtf8()).Select(b => RankManifest.FromUtf8(b)).ToList();
        problems = CollectiveExchange.Problems(manifests.Select(m => m.Error ?? string.Empty));
        if (problems.Length > 0)
        {
            throw new CheckpointException(CheckpointError.SaveFailed, folder, null, $"writing failed: {problems}");
        }

        // 3. Rank 0 commits: index last, then the latest pointer, then retention.
        var committed = string.Empty;
        if (Rank == 0)
        {
            committed = Attempt(() => Commit(folder, step, manifests));
        }

        committed = CollectiveExchange.Broadcast(comm, committed);
        if (committed.Length > 0)
        {
            throw new CheckpointException(CheckpointError.SaveFailed, folder, null, $"rank 0 could not commit: {committed}");
        }

        logger.LogInformation("Saved checkpoint step {Step} ({Bytes} bytes on rank {Rank}) to {Folder}", step, source.Bytes, Rank, folder);
        return folder;
    }

    private void Commit(string folder, long step, List<RankManifest> manifests)
    {
        var index = IndexBuilder.Build(manifests, step, WorldSize, options.ConfigFingerprint, folder);
        CheckpointFaults.Stage("index:built");
        DurableFiles.WriteAllText(Path.Combine(folder, CheckpointPaths.IndexFile), index.ToJson(), CheckpointPaths.IndexFile);
        CheckpointCatalog.WriteLatest(Root, step);
        try
        {
            CheckpointRetention.Retain(Root, options.KeepLast, step);
        }
        catch (IOException ex)
        {
            logger.LogWarning(ex, "Could not delete old checkpoints under {Root}", Root); // the new checkpoint is committed all the same
        }
    }

    private static string Attempt(Action action)
    {
        try
        {
            action();
            return string.Empty;
        }
        catch (Exception ex)
        {
            return ex.Message; // broadcast, so every rank raises it
        }
    }
}
