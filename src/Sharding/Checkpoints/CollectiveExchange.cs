using System.Text;
using BnbDist.Collectives;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// The few collectives a checkpoint needs, on byte strings: every rank's bytes to every rank (manifests, error
/// messages), and rank 0's text to every rank (its verdict). Without a communicator (one process) they are identities.
/// </summary>
internal static class CollectiveExchange
{
    public static List<byte[]> AllGather(ICommunicator? comm, byte[] mine)
    {
        if (comm is null || comm.WorldSize == 1)
        {
            return [mine];
        }

        using var scope = NewDisposeScope();
        var device = DeviceOf(comm);
        var lengths = Enumerable.Range(0, comm.WorldSize).Select(_ => empty(1, ScalarType.Int64, device)).ToList();
        comm.AllGather(lengths, tensor(new long[] { mine.Length }).to(device));
        var sizes = lengths.Select(l => l.cpu().item<long>()).ToArray();
        var max = (int)Math.Max(1, sizes.Max());
        var padded = new byte[max];
        mine.CopyTo(padded, 0);
        var blobs = Enumerable.Range(0, comm.WorldSize).Select(_ => empty(max, ScalarType.Byte, device)).ToList();
        comm.AllGather(blobs, tensor(padded).to(device));
        return [.. blobs.Select((b, r) => b.cpu().data<byte>().ToArray()[..(int)sizes[r]])];
    }

    /// <summary>Every rank's message (empty for none), rank order.</summary>
    public static List<string> AllGatherText(ICommunicator? comm, string mine) =>
        [.. AllGather(comm, Encoding.UTF8.GetBytes(mine)).Select(b => Encoding.UTF8.GetString(b))];

    /// <summary>Rank 0's <paramref name="text"/> on every rank.</summary>
    public static string Broadcast(ICommunicator? comm, string text)
    {
        if (comm is null || comm.WorldSize == 1)
        {
            return text;
        }

        using var scope = NewDisposeScope();
        var device = DeviceOf(comm);
        var bytes = comm.Rank == 0 ? Encoding.UTF8.GetBytes(text) : [];
        var length = tensor(new long[] { bytes.Length }).to(device);
        comm.Broadcast(length, 0);
        var n = length.cpu().item<long>();
        var buffer = comm.Rank == 0 ? tensor(bytes.Length == 0 ? new byte[1] : bytes).to(device) : empty(Math.Max(1, n), ScalarType.Byte, device);
        comm.Broadcast(buffer, 0);
        return Encoding.UTF8.GetString(buffer.cpu().data<byte>().ToArray(), 0, (int)n);
    }

    /// <summary>Where the communicator wants its tensors: NCCL takes only its GPU's, the TCP backend host memory.</summary>
    private static Device DeviceOf(ICommunicator comm) => comm is Collectives.Nccl.NcclCommunicator nccl ? nccl.Device : CPU;

    /// <summary>One line per rank that reported a problem ("rank R: message"), or empty.</summary>
    public static string Problems(IEnumerable<string> perRank) =>
        string.Join("; ", perRank.Select((m, r) => (m, r)).Where(x => x.m.Length > 0).Select(x => $"rank {x.r}: {x.m}"));
}
