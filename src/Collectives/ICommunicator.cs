using static TorchSharp.torch;

namespace BnbDist.Collectives;

/// <summary>Reductions of <see cref="ICommunicator.AllReduce"/> and <see cref="ICommunicator.ReduceScatter"/>.</summary>
public enum ReduceOp
{
    /// <summary>Sum over ranks.</summary>
    Sum,

    /// <summary>Mean over ranks (sum, then divide by the world size).</summary>
    Avg,

    /// <summary>Element-wise maximum.</summary>
    Max,

    /// <summary>Element-wise minimum.</summary>
    Min,
}

/// <summary>
/// A process group (after torch.distributed's <c>ProcessGroup</c>): collectives over the ranks of one job. Every call
/// has a timeout; a failed or timed-out collective throws <see cref="CollectiveException"/> on every rank (a failing
/// rank aborts its connections, so its peers fail fast instead of hanging).
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's rank, 0..WorldSize-1.</summary>
    int Rank { get; }

    /// <summary>Number of ranks.</summary>
    int WorldSize { get; }

    /// <summary>Backend name ("cpu", "nccl").</summary>
    string Backend { get; }

    /// <summary>Reduces <paramref name="tensor"/> across ranks in place.</summary>
    void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>Concatenates every rank's <paramref name="input"/> (rank order) into <paramref name="output"/> (WorldSize × input elements).</summary>
    void AllGather(Tensor output, Tensor input);

    /// <summary>Gathers every rank's <paramref name="input"/> into the list (one tensor per rank, same shape as input).</summary>
    void AllGather(IList<Tensor> outputs, Tensor input);

    /// <summary>Reduces <paramref name="input"/> (WorldSize × output elements) across ranks and keeps this rank's slice in <paramref name="output"/>.</summary>
    void ReduceScatter(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum);

    /// <summary>Copies <paramref name="tensor"/> from <paramref name="root"/> to every rank.</summary>
    void Broadcast(Tensor tensor, int root = 0);

    /// <summary>Sends <paramref name="tensor"/> to rank <paramref name="dst"/>.</summary>
    void Send(Tensor tensor, int dst);

    /// <summary>Receives into <paramref name="tensor"/> from rank <paramref name="src"/>.</summary>
    void Recv(Tensor tensor, int src);

    /// <summary>Returns when every rank has reached the barrier.</summary>
    void Barrier();

    /// <summary><see cref="AllReduce"/> without blocking: the task completes when the tensor holds the result.</summary>
    /// <remarks>Collectives run in issue order (blocking and async alike); don't touch the tensor until the task completes.</remarks>
    Task AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary><see cref="AllGather(Tensor, Tensor)"/> without blocking.</summary>
    Task AllGatherAsync(Tensor output, Tensor input);

    /// <summary><see cref="ReduceScatter"/> without blocking.</summary>
    Task ReduceScatterAsync(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum);

    /// <summary><see cref="Broadcast"/> without blocking.</summary>
    Task BroadcastAsync(Tensor tensor, int root = 0);
}

/// <summary>A collective failed (peer gone, timeout, mismatched sizes); the message says which op, rank and peer.</summary>
public sealed class CollectiveException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CollectiveException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>Creates the exception.</summary>
    public CollectiveException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public CollectiveException(string message)
        : base(message)
    {
    }
}
