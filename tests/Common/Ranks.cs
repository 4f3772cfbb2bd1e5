using BnbDist.Collectives;
using BnbDist.Collectives.Cpu;
using BnbDist.Collectives.Store;

namespace BnbDist.Tests;

/// <summary>Runs a body on N ranks, each a thread with its own store client and communicator over loopback.</summary>
internal static class Ranks
{
    public static List<Exception> Run(int world, Action<ICommunicator> body, bool expectFailures = false)
    {
        var server = new TcpStoreServer().Start();
        var port = server.EndPoint.Port;
        var prefix = "test/" + Guid.NewGuid().ToString("N");
        var errors = new List<Exception>();
        var threads = Enumerable.Range(0, world).Select(rank => new Thread(() =>
        {
            try
            {
                using var store = TcpStoreClient.Connect("127.0.0.1", port);
                using var comm = TcpCommunicator.Create(store, rank, world, new CommunicatorOptions { Timeout = TimeSpan.FromSeconds(15), StorePrefix = prefix });
                body(comm);
            }
            catch (Exception ex)
            {
                lock (errors)
                {
                    errors.Add(ex);
                }
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        if (!expectFailures && errors.Count > 0)
        {
            throw new AggregateException(errors);
        }

        return errors;
    }
}
