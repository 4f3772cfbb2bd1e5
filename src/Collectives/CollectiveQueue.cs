using System.Collections.Concurrent;

namespace BnbDist.Collectives;

/// <summary>
/// Runs a communicator's collectives one at a time, in the order they were issued, on a dedicated thread. Every rank
/// must run collectives in the same order; a single FIFO keeps that true when async and blocking calls are mixed,
/// while async calls let the caller compute while a collective is on the wire.
/// </summary>
internal sealed class CollectiveQueue : IDisposable
{
    private readonly BlockingCollection<(Action Work, TaskCompletionSource Done)> queue = [];
    private readonly Thread worker;

    public CollectiveQueue(string name)
    {
        worker = new Thread(Run) { IsBackground = true, Name = name };
        worker.Start();
    }

    /// <summary>Queues <paramref name="work"/>; the task completes (or faults with its exception) when it has run.</summary>
    public Task Enqueue(Action work)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            queue.Add((work, done));
        }
        catch (InvalidOperationException)
        {
            done.SetException(new CollectiveException("the communicator has been disposed."));
        }

        return done.Task;
    }

    public void Dispose()
    {
        queue.CompleteAdding();
        if (Thread.CurrentThread != worker)
        {
            worker.Join();
        }

        queue.Dispose();
    }

    private void Run()
    {
        foreach (var (work, done) in queue.GetConsumingEnumerable())
        {
            try
            {
                work();
                done.SetResult();
            }
            catch (Exception ex)
            {
                done.SetException(ex);
            }
        }
    }
}
