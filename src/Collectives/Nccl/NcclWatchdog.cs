using System.Diagnostics;
using BnbDist.Backends.Interop;

namespace BnbDist.Collectives.Nccl;

/// <summary>
/// Tracks the collectives a communicator has enqueued on the GPU and completes their tasks in order (they run in
/// stream order, so the oldest finishes first). While one is running it polls its completion event and NCCL's
/// asynchronous error; an error, or a collective still running after the timeout, aborts the communicator and fails
/// every pending task, so a dead or stuck peer becomes an exception instead of a hang.
/// </summary>
internal sealed class NcclWatchdog : IDisposable
{
    private readonly Queue<InFlight> pending = new();
    private readonly System.Collections.Concurrent.ConcurrentBag<IntPtr> events = [];
    private readonly Thread thread;
    private readonly int device;
    private readonly TimeSpan timeout;
    private readonly Func<int> asyncError;
    private readonly Action<string> abort;
    private bool stopping;

    /// <param name="device">CUDA device of the events.</param>
    /// <param name="timeout">How long one collective may run once it is the oldest in flight.</param>
    /// <param name="asyncError">Returns NCCL's asynchronous error code (0 when none).</param>
    /// <param name="abort">Aborts the communicator with a reason (called on the watchdog thread).</param>
    /// <param name="name">Thread name.</param>
    public NcclWatchdog(int device, TimeSpan timeout, Func<int> asyncError, Action<string> abort, string name)
    {
        this.device = device;
        this.timeout = timeout;
        this.asyncError = asyncError;
        this.abort = abort;
        thread = new Thread(Run) { IsBackground = true, Name = name };
        thread.Start();
    }

    /// <summary>Number of collectives still running.</summary>
    public int InFlightCount
    {
        get
        {
            lock (pending)
            {
                return pending.Count;
            }
        }
    }

    /// <summary>A completion event from the pool (creating one costs microseconds per collective otherwise).</summary>
    public IntPtr RentEvent()
    {
        if (events.TryTake(out var e))
        {
            return e;
        }

        CudaRuntime.Check(CudaRuntime.cudaEventCreateWithFlags(out e, CudaRuntime.EventDisableTiming), "cudaEventCreateWithFlags");
        return e;
    }

    /// <summary>Starts watching <paramref name="done"/> (an event recorded after the collective); the task completes with it.</summary>
    /// <param name="op">Name for messages.</param>
    /// <param name="done">Event from <see cref="RentEvent"/> recorded after the collective; the watchdog takes it back.</param>
    /// <param name="keepAlive">Temporaries the collective uses, disposed when it has finished.</param>
    public Task Track(string op, IntPtr done, IDisposable? keepAlive)
    {
        var work = new InFlight(op, done, keepAlive, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        lock (pending)
        {
            pending.Enqueue(work);
            Monitor.PulseAll(pending);
        }

        return work.Done.Task;
    }

    /// <summary>Fails every pending task with <paramref name="reason"/> (after an abort: the events have completed or never will matter).</summary>
    public void FailAll(string reason)
    {
        List<InFlight> all;
        lock (pending)
        {
            all = [.. pending];
            pending.Clear();
        }

        foreach (var w in all)
        {
            Finish(w, new CollectiveException(reason));
        }
    }

    public void Dispose()
    {
        lock (pending)
        {
            stopping = true;
            Monitor.PulseAll(pending);
        }

        if (Thread.CurrentThread != thread)
        {
            thread.Join();
        }

        FailAll("the communicator was disposed while this collective was in flight.");
        while (events.TryTake(out var e))
        {
            _ = CudaRuntime.cudaEventDestroy(e);
        }
    }

    private void Run()
    {
        CudaRuntime.Check(CudaRuntime.cudaSetDevice(device), "cudaSetDevice");
        while (true)
        {
            InFlight head;
            lock (pending)
            {
                while (pending.Count == 0 && !stopping)
                {
                    Monitor.Wait(pending);
                }

                if (pending.Count == 0)
                {
                    return;
                }

                head = pending.Peek();
            }

            var failure = WaitFor(head);
            if (failure is null)
            {
                lock (pending)
                {
                    if (pending.Count > 0 && ReferenceEquals(pending.Peek(), head))
                    {
                        pending.Dequeue();
                    }
                }

                events.Add(head.Event); // complete: safe to re-record
                Finish(head, null);
            }
            else
            {
                abort(failure);
                FailAll(failure);
            }
        }
    }

    // null when the collective finished; otherwise why it did not.
    private string? WaitFor(InFlight work)
    {
        var clock = Stopwatch.StartNew();
        var spin = new SpinWait();
        var nextErrorCheck = TimeSpan.Zero;
        while (true)
        {
            var q = CudaRuntime.cudaEventQuery(work.Event);
            if (q == 0)
            {
                return null;
            }

            if (q != CudaRuntime.ErrorNotReady)
            {
                return $"{work.Op}: CUDA error {q} ({CudaRuntime.ErrorString(q)}) while waiting for the collective.";
            }

            lock (pending)
            {
                if (stopping)
                {
                    return $"{work.Op}: the communicator was disposed while this collective was in flight.";
                }
            }

            var elapsed = clock.Elapsed;
            if (elapsed >= nextErrorCheck)
            {
                var e = asyncError();
                if (e != 0)
                {
                    return $"{work.Op}: NCCL reported asynchronous error {e} (a peer failed or the network broke); the communicator was aborted.";
                }

                nextErrorCheck = elapsed + TimeSpan.FromMilliseconds(1);
            }

            if (elapsed > timeout)
            {
                return $"{work.Op} timed out after {timeout.TotalSeconds:F0} s (a peer is missing, stuck or called a different collective); the communicator was aborted.";
            }

            // Short collectives finish within microseconds: spin first, then back off to sleeping.
            if (elapsed < TimeSpan.FromMilliseconds(2))
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
            else
            {
                Thread.Sleep(1);
            }
        }
    }

    // Failed work's events are destroyed, not pooled: after an abort they may never complete.
    private static void Finish(InFlight w, Exception? error)
    {
        if (error is not null)
        {
            _ = CudaRuntime.cudaEventDestroy(w.Event);
        }

        w.KeepAlive?.Dispose();
        if (error is null)
        {
            w.Done.TrySetResult();
        }
        else
        {
            w.Done.TrySetException(error);
        }
    }

    private sealed record InFlight(string Op, IntPtr Event, IDisposable? KeepAlive, TaskCompletionSource Done);
}
