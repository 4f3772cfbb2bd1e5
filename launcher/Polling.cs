using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace BnbDist.Launcher;

/// <summary>
/// Bounded waits on the rendezvous store: a probe is retried at a fixed interval (Polly retry) inside one overall
/// deadline (Polly timeout), so no wait of the agent can hang, and cancellation (SIGINT/SIGTERM) ends it at once.
/// </summary>
internal static class Polling
{
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);

    /// <summary>Calls <paramref name="probe"/> until it returns true (then true), or false once <paramref name="timeout"/> passed.</summary>
    public static async Task<bool> UntilAsync(Func<bool> probe, TimeSpan timeout, CancellationToken ct)
    {
        var pipeline = new ResiliencePipelineBuilder<bool>()
            .AddTimeout(timeout)
            .AddRetry(new RetryStrategyOptions<bool>
            {
                ShouldHandle = new PredicateBuilder<bool>().HandleResult(done => !done),
                BackoffType = DelayBackoffType.Constant,
                Delay = Interval,
                MaxRetryAttempts = int.MaxValue,
            })
            .Build();
        try
        {
            return await pipeline.ExecuteAsync(_ => ValueTask.FromResult(probe()), ct).ConfigureAwait(false);
        }
        catch (TimeoutRejectedException)
        {
            return false;
        }
    }
}
