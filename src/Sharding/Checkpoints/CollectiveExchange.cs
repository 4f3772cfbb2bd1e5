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
        var lengths = Enumerable.Range(0, comm.WorldSize).Select(_ => empty(1, ScalarType.Int64)).ToList();
        comm.AllGather(lengths, tensor(new long[] { mine.Length }));
        var sizes = lengths.Select(l => l.item<long>()).ToArray();
        var max = (int)Math.Max(1, sizes.Max());
        var padded = new byte[max];
        mine.CopyTo(padded, 0);
        var blobs = Enumerable.Range(0, comm.WorldSize).Select(_ => empty(max, ScalarType.Byte)).ToList();
        comm.AllGather(blobs, tensor(padded));
        return [.. blobs.Select((b, r) => b.data<byte>().ToArray()[..(int)sizes[r]])];
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
        var bytes = comm.Rank == 0 ? Encoding.UTF8.GetBytes(text) : [];
        var length = tensor(new long[] { bytes.Length });
        comm.Broadcast(length, 0);
        var buffer = comm.Rank == 0 ? tensor(bytes.Length == 0 ? new byte[1] : bytes) : empty(Math.Max(1, length.item<long>()), ScalarType.Byte);
        comm.Broadcast(buffer, 0);
        return Encoding.UTF8.GetString(buffer.data<byte>().ToArray(), 0, (int)length.item<long>());
    }

    /// <summary>One line per rank that reported a problem ("rank R: message"), or empty.</summary>
    public static string Problems(IEnumerable<string> perRank) =>
        string.Join("; ", perRank.Select((m, r) => (m, r)).Where(x => x.m.Length > 0).Select(x => $"rank {x.r}: {x.m}"));
}
