using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using BnbDist.Launcher;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var nproc = new Option<string>("--nproc", "--nproc-per-node") { Description = "Workers per node, or 'auto' (number of GPUs, else 1).", DefaultValueFactory = _ => "1" };
var nnodes = new Option<string>("--nnodes")
{
    Description = "Number of nodes: N (fixed; ranks follow --node-rank) or MIN:MAX (elastic: a rendezvous round starts once MAX " +
                  "nodes joined, or MIN joined and --rdzv-last-call passed; node ranks follow the join order, node 0 = the store host; " +
                  "late nodes wait for the next round).",
    DefaultValueFactory = _ => "1",
};
var nodeRank = new Option<int>("--node-rank") { Description = "This node's index with a fixed --nnodes (node 0 hosts the store); elastic nodes get theirs in join order.", DefaultValueFactory = _ => 0 };
var masterAddr = new Option<string>("--master-addr") { Description = "Host of node 0 (the rendezvous store).", DefaultValueFactory = _ => "127.0.0.1" };
var masterPort = new Option<int>("--master-port") { Description = "Port of the rendezvous store.", DefaultValueFactory = _ => 29500 };
var maxRestarts = new Option<int>("--max-restarts")
{
    Description = "Restarts of the whole job after a worker failure on any node (or a lost node): every node's agent stops its workers " +
                  "and all join a new rendezvous round (TORCHELASTIC_RESTART_COUNT = round).",
    DefaultValueFactory = _ => 0,
};
var lastCall = new Option<double>("--rdzv-last-call") { Description = "Seconds an elastic round stays open for more nodes once MIN joined.", DefaultValueFactory = _ => 5 };
var rdzvTimeout = new Option<double>("--rdzv-timeout") { Description = "Seconds to wait for a round to reach MIN nodes (or to be let into one).", DefaultValueFactory = _ => 300 };
var heartbeatTimeout = new Option<double>("--heartbeat-timeout") { Description = "Seconds of silence after which a node's agent counts as dead (its round fails on every node).", DefaultValueFactory = _ => 15 };
var backend = new Option<string>("--backend") { Description = "auto | nccl | cpu (passed to workers as BNBDIST_BACKEND).", DefaultValueFactory = _ => "auto" };
var logDir = new Option<string?>("--log-dir") { Description = "Write each rank's output and error record under this folder." };
var tee = new Option<bool>("--tee") { Description = "With --log-dir, also print worker output to the console." };
var standalone = new Option<bool>("--standalone") { Description = "Single node on a free local port (ignores --master-addr/--master-port)." };
var rdzvId = new Option<string?>("--rdzv-id", "--run-id") { Description = "Job id shared by every node's agent (multi-node default: 'bnbdist-job')." };
var program = new Argument<string>("program") { Description = "The worker: a .dll (run with dotnet) or an executable." };
var programArgs = new Argument<string[]>("args") { Description = "Arguments for the worker.", Arity = ArgumentArity.ZeroOrMore };

var root = new RootCommand("bnbrun: start a BnbDist job (torchrun's flags and environment variables).")
{
    nproc, nnodes, nodeRank, masterAddr, masterPort, maxRestarts, lastCall, rdzvTimeout, heartbeatTimeout, backend, logDir, tee, standalone, rdzvId, program, programArgs,
    CheckpointCommand.Create(),
};
root.TreatUnmatchedTokensAsErrors = false;
root.SetAction(parse =>
{
    var nprocValue = parse.GetValue(nproc)!;
    var procs = nprocValue == "auto" ? Math.Max(1, CountGpus()) : int.TryParse(nprocValue, out var p) && p > 0 ? p : -1;
    if (procs < 1)
    {
        Console.Error.WriteLine($"bnbrun: --nproc must be a positive integer or 'auto'; got '{nprocValue}'.");
        return 2;
    }

    if (!TryParseNodes(parse.GetValue(nnodes)!, out var minNodes, out var maxNodes))
    {
        Console.Error.WriteLine($"bnbrun: --nnodes must be N or MIN:MAX with 1 <= MIN <= MAX; got '{parse.GetValue(nnodes)}'.");
        return 2;
    }

    var seconds = new[] { (lastCall, 0.0), (rdzvTimeout, 0.1), (heartbeatTimeout, 0.1) };
    foreach (var (option, least) in seconds)
    {
        if (!(parse.GetValue(option) >= least))
        {
            Console.Error.WriteLine($"bnbrun: {option.Name} must be at least {least} seconds; got {parse.GetValue(option)}.");
            return 2;
        }
    }

    var isStandalone = parse.GetValue(standalone);
    var options = new LaunchOptions
    {
        NProcPerNode = procs,
        MinNodes = isStandalone ? 1 : minNodes,
        MaxNodes = isStandalone ? 1 : maxNodes,
        NodeRank = isStandalone ? 0 : parse.GetValue(nodeRank),
        MasterAddr = isStandalone ? "127.0.0.1" : parse.GetValue(masterAddr)!,
        MasterPort = isStandalone ? FreePort() : parse.GetValue(masterPort),
        MaxRestarts = Math.Max(0, parse.GetValue(maxRestarts)),
        LastCall = TimeSpan.FromSeconds(parse.GetValue(lastCall)),
        RendezvousTimeout = TimeSpan.FromSeconds(parse.GetValue(rdzvTimeout)),
        HeartbeatTimeout = TimeSpan.FromSeconds(parse.GetValue(heartbeatTimeout)),
        Backend = parse.GetValue(backend)!,
        LogDir = parse.GetValue(logDir),
        Tee = parse.GetValue(tee),
        Standalone = isStandalone,
        Program = parse.GetValue(program)!,
        // Every node must agree on the id (it prefixes the store keys); one node can make up its own.
        RunId = parse.GetValue(rdzvId) ?? (!isStandalone && maxNodes > 1 ? "bnbdist-job" : Guid.NewGuid().ToString("N")[..12]),
        ProgramArgs = [.. parse.GetValue(programArgs) ?? [], .. parse.UnmatchedTokens],
    };
    if (!options.Elastic && (options.NodeRank < 0 || options.NodeRank >= options.MaxNodes))
    {
        Console.Error.WriteLine($"bnbrun: --node-rank must be in 0..{options.MaxNodes - 1}; got {options.NodeRank}.");
        return 2;
    }

    // A path or a .dll must exist; a bare command name is looked up on PATH when started.
    var isPath = options.Program.Contains('/', StringComparison.Ordinal) || options.Program.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
    if (isPath && !File.Exists(options.Program))
    {
        Console.Error.WriteLine($"bnbrun: program not found: {options.Program}");
        return 2;
    }

    var builder = Host.CreateApplicationBuilder();
    builder.Logging.ClearProviders();
    builder.Logging.AddSimpleConsole(o =>
    {
        o.SingleLine = true;
        o.TimestampFormat = "HH:mm:ss ";
    });
    builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(15));
    builder.Services.AddSingleton(options);
    builder.Services.AddSingleton<ElasticAgent>();
    builder.Services.AddHostedService(sp => sp.GetRequiredService<ElasticAgent>());
    builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
    using var host = builder.Build();
    var agent = host.Services.GetRequiredService<ElasticAgent>();
    host.Run(); // SIGINT/SIGTERM stop the host, which stops the agent and its workers
    return agent.ExitCode;
});
return root.Parse(args).Invoke();

static bool TryParseNodes(string text, out int min, out int max)
{
    var parts = text.Split(':');
    min = max = 0;
    var ok = parts.Length is 1 or 2 && int.TryParse(parts[0], out min) && int.TryParse(parts[^1], out max);
    return ok && min >= 1 && max >= min;
}

static int FreePort()
{
    using var l = new TcpListener(IPAddress.Loopback, 0);
    l.Start();
    return ((IPEndPoint)l.LocalEndpoint).Port;
}

static int CountGpus()
{
    // /proc/driver/nvidia/gpus has one folder per NVIDIA GPU; CUDA_VISIBLE_DEVICES narrows it.
    var visible = Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES");
    if (visible is not null)
    {
        return visible.Split(',', StringSplitOptions.RemoveEmptyEntries).Length;
    }

    const string dir = "/proc/driver/nvidia/gpus";
    return Directory.Exists(dir) ? Directory.GetDirectories(dir).Length : 0;
}
