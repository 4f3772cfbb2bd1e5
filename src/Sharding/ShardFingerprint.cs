using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using BnbDist.Collectives;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// Checks that every rank describes the same things (the same parameters, shapes, dtypes, quantization settings,
/// optimizer configs) with two small collectives, and names the first difference on every rank.
/// </summary>
public static class ShardFingerprint
{
    /// <summary>
    /// Throws <see cref="ShardingException"/> on every rank unless all ranks pass equal <paramref name="items"/>
    /// (compared by a 64-bit hash of each item).
    /// </summary>
    /// <param name="comm">The process group.</param>
    /// <param name="items">One line per thing to compare (e.g. "layers.0.q_proj.weight [64,64] Float32").</param>
    /// <param name="what">What the items are, for the message ("parameters of block layers.0").</param>
    /// <param name="device">Where the communicator wants tensors (CUDA for NCCL); CPU by default.</param>
    public static void Verify(ICommunicator comm, IReadOnlyList<string> items, string what, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(comm);
        ArgumentNullException.ThrowIfNull(items);
        if (comm.WorldSize == 1)
        {
            return;
        }

        using var scope = NewDisposeScope();
        var count = tensor(new long[] { items.Count, -items.Count }).to(device ?? CPU);
        comm.AllReduce(count, ReduceOp.Max);
        var counts = count.cpu().data<long>().ToArray();
        var max = counts[0];
        var min = -counts[1];
        if (max != min)
        {
            throw new ShardingException($"ranks disagree on {what}: between {min} and {max} items; this rank (rank {comm.Rank}) has {items.Count}.");
        }

        var mine = tensor(items.Select(Hash).ToArray()).to(device ?? CPU);
        var all = empty(items.Count * comm.WorldSize, ScalarType.Int64, device ?? CPU);
        comm.AllGather(all, mine);
        var hashes = all.cpu().data<long>().ToArray();
        for (var i = 0; i < items.Count; i++)
        {
            for (var r = 1; r < comm.WorldSize; r++)
            {
                if (hashes[(r * items.Count) + i] != hashes[i])
                {
                    throw new ShardingException($"ranks disagree on {what}, item {i}: rank 0 and rank {r} differ; this rank (rank {comm.Rank}) has \"{items[i]}\".");
                }
            }
        }
    }

    /// <summary>A stable 64-bit hash of a line (the first 8 bytes of its SHA-256).</summary>
    public static long Hash(string item)
    {
        ArgumentNullException.ThrowIfNull(item);
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(item), digest);
        return BinaryPrimitives.ReadInt64LittleEndian(digest);
    }
}
