using System.Net;
using BnbDist.Collectives.Store;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BnbDist.Launcher;

/// <summary>
/// The per-node agent (after torchrun's elastic agent): hosts the rendezvous store on node 0, starts this node's
/// workers, and on a worker failure stops the rest and restarts the whole group up to <c>--max-restarts</c> times
/// with backoff; finally exits with the failing worker's exit code. SIGINT/SIGTERM stop every worker.
/// </summary>
internal sealed class ElasticAgent(LaunchOptions options, ILogger<ElasticAgent> logger, IHostApplicationLifetime lifetime) : BackgroundService
{
    /// <summary>Exit code the process ends with.</summary>
    public int ExitCode { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        TcpStoreServer? store = null;
        try
        {
            if (options.NodeRank == 0)
            {
                var bind = options.NNodes > 1 ? IPAddress.Any : IPAddress.Loopback;
                store = new TcpStoreServer(options.MasterPort, new StoreOptions { BindAddress = bind, Token = StoreOptions.TokenFromEnvironment() }, logger).Start();
            }

            ExitCode = await RunAttemptsAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            ExitCode = 130;
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            logger.LogError("bnbrun failed: {Message}", ex.Message);
            ExitCode = 1;
        }
        finally
        {
            if (store is not null)
            {
                await store.DisposeAsync().ConfigureAwait(false);
            }

            lifetime.StopApplication();
        }
    }

    private async Task<int> RunAttemptsAsync(CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            using var group = new WorkerGroup(options, attempt, logger);
            group.Start();
            GroupResult result;
            try
            {
                result = await group.WaitAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                logger.LogWarning("bnbrun interrupted: stopping all workers.");
                await group.StopAsync().ConfigureAwait(false);
                throw;
            }

            if (result.Success)
            {
                logger.LogInformation("All {Count} worker(s) finished successfully.", options.NProcPerNode);
                return 0;
            }

            var summary = $"rank {result.FailedRank} failed with exit code {result.ExitCode}" +
                          (result.Error is null ? " (no error record)." : $":\n{result.Error}");
            if (attempt >= options.MaxRestarts)
            {
                logger.LogError("Job failed after {Attempts} attempt(s): {Summary}", attempt + 1, summary);
                return result.ExitCode;
            }

            var backoff = TimeSpan.FromSeconds(Math.Min(30, Math.Pow(2, attempt)));
            logger.LogWarning("Attempt {Attempt}: {Summary}\nRestarting the group in {Delay} s ({Left} restart(s) left).",
                attempt, summary, backoff.TotalSeconds, options.MaxRestarts - attempt);
            await Task.Delay(backoff, ct).ConfigureAwait(false);
        }
    }
}
