using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using BnbDist.Launcher;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var nproc = new Option<string>("--nproc", "--nproc-per-node") { Description = "Workers per node, or 'auto' (number of GPUs, else 1).", DefaultValueFactory = _ => "1" };
var nnodes = new Option<string>("--nnodes") { Description = "Number of nodes (M; elastic MIN:MAX is not supported yet).", DefaultValueFactory = _ => "1" };
var nodeRank = new Option<int>("--node-rank") { Description = "This node's index.", DefaultValueFactory = _ => 0 };
var masterAddr = new Option<string>("--master-addr") { Description = "Host of node 0 (the rendezvous store).", DefaultValueFactory = _ => "127.0.0.1" };
var masterPort = new Option<int>("--master-port") { Description = "Port of the rendezvous store.", DefaultValueFactory = _ => 29500 };
var maxRestarts = new Option<int>("--max-restarts") { Description = "Restarts of the whole group after a worker failure.", DefaultValueFactory = _ => 0 };
var backend = new Option<string>("--backend") { Description = "auto | nccl | cpu (passed to workers as BNBDIST_BACKEND).", DefaultValueFactory = _ => "auto" };
var logDir = new Option<string?>("--log-dir") { Description = "Write each rank's output and error record under this folder." };
var tee = new Option<bool>("--tee") { Description = "With --log-dir, also print worker output to the console." };
var standalone = new Option<bool>("--standalone") { Description = "Single node on a free local port (ignores --master-addr/--master-port)." };
var rdzvId = new Option<string?>("--rdzv-id", "--run-id") { Description = "Job id shared by every node's agent (multi-node default: 'bnbdist-job')." };
var program = new Argument<string>("program") { Description = "The worker: a .dll (run with dotnet) or an executable." };
var programArgs = new Argument<string[]>("args") { Description = "Arguments for the worker.", Arity = ArgumentArity.ZeroOrMore };

var root = new RootCommand("bnbrun: start a BnbDist job (torchrun's flags and environment variables).")
{
    nproc, nnodes, nodeRank, masterAddr, masterPort, maxRestarts, backend, logDir, tee, standalone, rdzvId, program, programArgs,
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

    if (!int.TryParse(parse.GetValue(nnodes), out var nodes) || nodes < 1)
    {
        Console.Error.WriteLine($"bnbrun: --nnodes must be a positive integer (elastic MIN:MAX is not supported yet); got '{parse.GetValue(nnodes)}'.");
        return 2;
    }

    var isStandalone = parse.GetValue(standalone);
    var options = new LaunchOptions
    {
        NProcPerNode = procs,
        NNodes = isStandalone ? 1 : nodes,
        NodeRank = isStandalone ? 0 : parse.GetValue(nodeRank),
        MasterAddr = isStandalone ? "127.0.0.1" : parse.GetValue(masterAddr)!,
        MasterPort = isStandalone ? FreePort() : parse.GetValue(masterPort),
        MaxRestarts = Math.Max(0, parse.GetValue(maxRestarts)),
        Backend = parse.GetValue(backend)!,
        LogDir = parse.GetValue(logDir),
        Tee = parse.GetValue(tee),
        Standalone = isStandalone,
        Program = parse.GetValue(program)!,
        // Every node must agree on the id (it prefixes the store keys); one node can make up its own.
        RunId = parse.GetValue(rdzvId) ?? (!isStandalone && nodes > 1 ? "bnbdist-job" : Guid.NewGuid().ToString("N")[..12]),
        ProgramArgs = [.. parse.GetValue(programArgs) ?? [], .. parse.UnmatchedTokens],
    };
    if (options.NodeRank < 0 || options.NodeRank >= options.NNodes)
    {
        Console.Error.WriteLine($"bnbrun: --node-rank must be in 0..{options.NNodes - 1}; got {options.NodeRank}.");
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
