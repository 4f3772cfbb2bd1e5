using BnbDist.Collectives;
using BnbDist.Collectives.Store;

namespace BnbDist.Examples.QLoRA;

/// <summary>
/// The job's process group: joined through bnbrun's (or Slurm's, or Open MPI's) variables, or, for a plain
/// <c>dotnet qlora.dll</c> without a launcher, a one-rank group with a store hosted in this process.
/// </summary>
internal sealed class ProcessGroup : IDisposable
{
    private readonly TcpStoreServer? localStore;
    private readonly IDisposable store;

    private ProcessGroup(DistributedEnvironment env, TcpStoreServer? localStore)
    {
        this.localStore = localStore;
        Environment = env;
        (var client, Communicator) = env.InitProcessGroup(TimeSpan.FromMinutes(2));
        store = client;
    }

    public DistributedEnvironment Environment { get; }

    public ICommunicator Communicator { get; }

    public static ProcessGroup Join()
    {
        var env = DistributedEnvironment.FromEnvironment();
        if (env.Source != "none")
        {
            return new ProcessGroup(env, null);
        }

        var server = new TcpStoreServer().Start();
        return new ProcessGroup(env with { MasterAddr = "127.0.0.1", MasterPort = server.EndPoint.Port }, server);
    }

    public void Dispose()
    {
        Communicator.Dispose();
        store.Dispose();
        localStore?.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}
