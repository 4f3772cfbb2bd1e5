using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using BnbDist.Collectives.Store;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BnbDist.Launcher;

/// <summary>
/// The per-node agent (after torchrun's elastic agent). Node 0 hosts the rendezvous store; every agent joins a
/// rendezvous round (<see cref="Rendezvous"/>), starts its workers with the round's world, and supervises the round
/// (<see cref="RoundSupervisor"/>): a failure on any node, or a node whose agent stops heartbeating, ends the round on
/// every node, and all agents restart together in the next round up to <c>--max-restarts</c>, then exit with the
/// failing worker's exit code. SIGINT/SIGTERM stop every worker.
/// </summary>
internal sealed class ElasticAgent(LaunchOptions options, ILogger<ElasticAgent> logger, IHostApplicationLifetime lifetime) : BackgroundService
{
    /// <summary>Exit code the process ends with.</summary>
    public int ExitCode { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield(); // the store calls below block; keep them off the host's start-up path
        TcpStoreServer? server = null;
        TcpStoreClient? store = null;
        try
        {
            server = HostStore();
            store = await TcpStoreClient.ConnectAsync(server is null ? options.MasterAddr : "127.0.0.1", options.MasterPort, new StoreOptions
            {
                Token = StoreOptions.TokenFromEnvironment(),
                ConnectTimeout = options.RendezvousTimeout,
                // A store that stops answering is a dead node 0: give up after the heartbeat timeout, not the 5-minute default.
                OperationTimeout = options.HeartbeatTimeout,
            }, stoppingToken).ConfigureAwait(false);
            ExitCode = await RunRoundsAsync(new Rendezvous(store, options, server is not null, logger), stoppingToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            ExitCode = 130;
        }
        catch (Exception ex) when (ex is SocketException or InvalidOperationException or System.ComponentModel.Win32Exception or StoreException or TimeoutException)
        {
            logger.LogError("bnbrun failed: {Message}", ex is StoreException ? ex.Message + " (did node 0's agent stop?)" : ex.Message);
            ExitCode = 1;
        }
        finally
        {
            store?.Dispose();
            if (server is not null)
            {
                await server.DisposeAsync().ConfigureAwait(false);
            }

            lifetime.StopApplication();
        }
    }

    private async Task<int> RunRoundsAsync(Rendezvous rendezvous, CancellationToken ct)
    {
        for (var round = rendezvous.IsHost ? 0 : -1; ; round++)
        {
            var info = await rendezvous.JoinAsync(round, ct).ConfigureAwait(false);
            if (info is null)
            {
                logger.LogInformation("The job finished while this node waited to join; nothing to do.");
                return 0;
            }

            round = info.Round;
            var failure = await new RoundSupervisor(options, rendezvous, info, logger).RunAsync(ct).ConfigureAwait(false);
            if (failure is null)
            {
                logger.LogInformation("All {Count} worker(s) of node {Node} finished successfully; so did every node of the round.", options.NProcPerNode, info.NodeRank);
                await rendezvous.FinishAsync(info, 0, ct).ConfigureAwait(false);
                return 0;
            }

            if (round >= options.MaxRestarts)
            {
                logger.LogError("Job failed after {Attempts} attempt(s): {Summary}", round + 1, failure.Summary);
                await rendezvous.FinishAsync(info, failure.ExitCode, ct).ConfigureAwait(false);
                return failure.ExitCode;
            }

            var backoff = TimeSpan.FromSeconds(Math.Min(30, Math.Pow(2, round)));
            logger.LogWarning("Attempt {Attempt}: {Summary}\nRestarting the group in {Delay} s ({Left} restart(s) left) in rendezvous round {Next}.",
                round, failure.Summary, backoff.TotalSeconds, options.MaxRestarts - round, round + 1);
            await Task.Delay(backoff, ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Starts the store if this agent hosts it: for a fixed node count, node 0; when elastic, the first agent on the
    /// host of <c>--master-addr</c> to bind the port (torchrun's rule), the others on that host become clients.
    /// </summary>
    private TcpStoreServer? HostStore()
    {
        if (options.Elastic ? !IsLocal(options.MasterAddr) : options.NodeRank != 0)
        {
            return null;
        }

        var bind = options.MaxNodes > 1 ? IPAddress.Any : IPAddress.Loopback;
        var server = new TcpStoreServer(options.MasterPort, new StoreOptions { BindAddress = bind, Token = StoreOptions.TokenFromEnvironment() }, logger);
        try
        {
            return server.Start();
        }
        catch (SocketException ex) when (options.Elastic && ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            logger.LogInformation("Port {Port} is taken on this host: joining the store there as a client.", options.MasterPort);
            return null;
        }
    }

    private static bool IsLocal(string host)
    {
        if (host is "localhost" || string.Equals(host, Dns.GetHostName(), StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        if (!IPAddress.TryParse(host, out var address))
        {
            return false;
        }

        return IPAddress.IsLoopback(address) || NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses).Any(u => u.Address.Equals(address));
    }
}
