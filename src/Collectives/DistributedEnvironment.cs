using System.Globalization;
using System.Text.Json;
using BnbDist.Collectives.Cpu;
using BnbDist.Collectives.Nccl;
using BnbDist.Collectives.Store;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace BnbDist.Collectives;

/// <summary>
/// What a worker process learns from its launcher: rank, world size, where the store is. Read from torchrun's
/// variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT, set by
/// <c>bnbrun</c>), or Slurm's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, ...) or Open MPI's (OMPI_COMM_WORLD_*), so the
/// same program runs under <c>bnbrun</c>, <c>srun</c> or <c>mpirun</c>.
/// </summary>
public sealed record DistributedEnvironment
{
    /// <summary>Global rank.</summary>
    public int Rank { get; init; }

    /// <summary>Rank within this node.</summary>
    public int LocalRank { get; init; }

    /// <summary>Number of ranks in the job.</summary>
    public int WorldSize { get; init; } = 1;

    /// <summary>Ranks on this node.</summary>
    public int LocalWorldSize { get; init; } = 1;

    /// <summary>This node's index.</summary>
    public int NodeRank { get; init; }

    /// <summary>Host of the rendezvous store.</summary>
    public string MasterAddr { get; init; } = "127.0.0.1";

    /// <summary>Port of the rendezvous store.</summary>
    public int MasterPort { get; init; } = 29500;

    /// <summary>How many times the launcher has restarted the group.</summary>
    public int RestartCount { get; init; }

    /// <summary>Run id shared by the job's processes.</summary>
    public string RunId { get; init; } = "none";

    /// <summary>Requested backend: auto, cpu or nccl.</summary>
    public string Backend { get; init; } = "auto";

    /// <summary>Where to write this worker's error record (exception and stack) if it fails, or null.</summary>
    public string? ErrorFile { get; init; }

    /// <summary>Which launcher's variables were found: "bnbrun/torchrun", "slurm", "openmpi" or "none".</summary>
    public string Source { get; init; } = "none";

    /// <summary>Reads the environment of this process.</summary>
    public static DistributedEnvironment FromEnvironment() => From(name => Environment.GetEnvironmentVariable(name));

    /// <summary>Reads from a variable lookup (for tests).</summary>
    public static DistributedEnvironment From(Func<string, string?> get)
    {
        ArgumentNullException.ThrowIfNull(get);
        int Int(string name, int fallback) =>
            get(name) is { Length: > 0 } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

        var common = new DistributedEnvironment
        {
            MasterAddr = get("MASTER_ADDR") ?? "127.0.0.1",
            MasterPort = Int("MASTER_PORT", 29500),
            RestartCount = Int("TORCHELASTIC_RESTART_COUNT", 0),
            RunId = get("TORCHELASTIC_RUN_ID") ?? "none",
            Backend = get("BNBDIST_BACKEND") ?? "auto",
            ErrorFile = get("TORCHELASTIC_ERROR_FILE"),
        };
        if (get("RANK") is not null)
        {
            return common with
            {
                Source = "bnbrun/torchrun",
                Rank = Int("RANK", 0),
                LocalRank = Int("LOCAL_RANK", 0),
                WorldSize = Int("WORLD_SIZE", 1),
                LocalWorldSize = Int("LOCAL_WORLD_SIZE", 1),
                NodeRank = Int("GROUP_RANK", Int("NODE_RANK", 0)),
            };
        }

        if (get("SLURM_PROCID") is not null)
        {
            return common with
            {
                Source = "slurm",
                Rank = Int("SLURM_PROCID", 0),
                LocalRank = Int("SLURM_LOCALID", 0),
                WorldSize = Int("SLURM_NTASKS", 1),
                LocalWorldSize = Int("SLURM_NTASKS_PER_NODE", 1),
                NodeRank = Int("SLURM_NODEID", 0),
            };
        }

        if (get("OMPI_COMM_WORLD_RANK") is not null)
        {
            return common with
            {
                Source = "openmpi",
                Rank = Int("OMPI_COMM_WORLD_RANK", 0),
                LocalRank = Int("OMPI_COMM_WORLD_LOCAL_RANK", 0),
                WorldSize = Int("OMPI_COMM_WORLD_SIZE", 1),
                LocalWorldSize = Int("OMPI_COMM_WORLD_LOCAL_SIZE", 1),
                NodeRank = Int("OMPI_COMM_WORLD_NODE_RANK", 0),
            };
        }

        return common;
    }

    /// <summary>Where the backend choice is logged (which backend and why); set it once at start-up (defaults to no logging).</summary>
    public static ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>
    /// The backend <see cref="InitProcessGroup"/> uses, and why: <c>cpu</c> or <c>nccl</c> when requested
    /// (<c>bnbrun --backend</c>, i.e. BNBDIST_BACKEND); for <c>auto</c>, NCCL when libtorch sees at least one GPU per
    /// local rank and libnccl loads, otherwise the CPU backend.
    /// </summary>
    /// <exception cref="ArgumentException">BNBDIST_BACKEND is not auto, cpu or nccl.</exception>
    public (string Backend, string Reason) ChooseBackend()
    {
        switch (Backend.ToLowerInvariant())
        {
            case "cpu":
                return ("cpu", "requested (--backend cpu)");
            case "nccl":
                return ("nccl", "requested (--backend nccl)");
            case "auto":
                var gpus = torch.cuda.is_available() ? torch.cuda.device_count() : 0;
                if (gpus == 0)
                {
                    return ("cpu", "auto: libtorch sees no CUDA device");
                }

                if (gpus < LocalWorldSize)
                {
                    return ("cpu", $"auto: {LocalWorldSize} local ranks but {gpus} GPU(s), and NCCL needs one GPU per rank");
                }

                return NcclLibrary.IsAvailable
                    ? ("nccl", $"auto: {gpus} GPU(s) and NCCL {NcclLibrary.FormatVersion(NcclLibrary.Version)} ({NcclLibrary.LoadedPath})")
                    : ("cpu", $"auto: GPUs present but NCCL is unavailable: {NcclLibrary.LoadError}");
            default:
                throw new ArgumentException($"BNBDIST_BACKEND (bnbrun --backend) must be auto, cpu or nccl; got '{Backend}'.", nameof(Backend));
        }
    }

    /// <summary>
    /// Connects to the store and joins the process group with the backend <see cref="ChooseBackend"/> picks (NCCL on
    /// GPU LOCAL_RANK, or the CPU backend over TCP), logging the choice. The store prefix includes the run id and
    /// restart count, so a restarted group never reads stale keys.
    /// </summary>
    public (TcpStoreClient Store, ICommunicator Communicator) InitProcessGroup(TimeSpan? timeout = null)
    {
        var t = timeout ?? TimeSpan.FromMinutes(5);
        var (backend, reason) = ChooseBackend();
        Logger.LogInformation("rank {Rank}: process group backend {Backend} ({Reason})", Rank, backend, reason);
        var store = TcpStoreClient.Connect(MasterAddr, MasterPort, new StoreOptions
        {
            Token = StoreOptions.TokenFromEnvironment(),
            ConnectTimeout = t,
            OperationTimeout = t,
        });
        try
        {
            if (backend == "nccl")
            {
                return (store, NcclCommunicator.Create(store, Rank, WorldSize, LocalRank, new NcclOptions
                {
                    Timeout = t,
                    StorePrefix = $"bnbdist/{RunId}/{RestartCount}/nccl",
                }));
            }

            // Several nodes: listen on every interface and advertise the address this host uses to reach node 0.
            var multiNode = WorldSize > LocalWorldSize;
            var comm = TcpCommunicator.Create(store, Rank, WorldSize, new CommunicatorOptions
            {
                Timeout = t,
                StorePrefix = $"bnbdist/{RunId}/{RestartCount}/cpu",
                BindAddress = multiNode ? System.Net.IPAddress.Any : System.Net.IPAddress.Loopback,
                AdvertiseAddress = multiNode ? store.LocalAddress : null,
            });
            return (store, comm);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>Writes the launcher's error record for <paramref name="ex"/> (exception type, message, stack), if an error file was given.</summary>
    public void RecordError(Exception ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        if (string.IsNullOrEmpty(ErrorFile))
        {
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(ErrorFile))!);
        File.WriteAllText(ErrorFile, JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["rank"] = Rank,
            ["type"] = ex.GetType().FullName ?? ex.GetType().Name,
            ["message"] = ex.Message,
            ["stack"] = ex.ToString(),
            ["timestamp"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture),
        }));
    }

    /// <summary>
    /// Runs a worker's body with error recording: an exception is written to the error file for the launcher's
    /// summary, printed, and turned into exit code 1. Under <c>bnbrun</c> the worker also exits if its agent dies
    /// (<see cref="AgentWatchdog"/>).
    /// </summary>
    public static int RunWorker(Func<DistributedEnvironment, int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        AgentWatchdog.Start();
        var env = FromEnvironment();
        try
        {
            return body(env);
        }
        catch (Exception ex)
        {
            env.RecordError(ex);
            Console.Error.WriteLine($"rank {env.Rank} failed: {ex}");
            return 1;
        }
    }
}
