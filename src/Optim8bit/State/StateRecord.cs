using static TorchSharp.torch;

namespace BnbDist.Optim8bit.State;

/// <summary>
/// One parameter's optimizer state in bitsandbytes' keys: <c>state1</c>, <c>state2</c> (u8 or f32), and for 8-bit
/// state <c>absmax1</c>, <c>absmax2</c>, <c>qmap1</c>, <c>qmap2</c>; plus the step count and the update rule
/// (bitsandbytes' kernel name), which must match on load. Tensors is null for a parameter that has not stepped yet.
/// </summary>
internal sealed record StateRecord(string Kind, long Step, IReadOnlyDictionary<string, Tensor>? Tensors)
{
    private const string Magic = "bnbdist.optim8bit.state/1";

    /// <summary>Writes the record: tensors as dtype, shape and raw little-endian bytes.</summary>
    public void Write(BinaryWriter writer)
    {
        writer.Write(Magic);
        writer.Write(Kind);
        writer.Write(Step);
        writer.Write(Tensors is not null);
        if (Tensors is null)
        {
            return;
        }

        writer.Write(Tensors.Count);
        foreach (var (key, t) in Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            writer.Write(key);
            writer.Write((int)t.dtype);
            writer.Write(t.dim());
            foreach (var d in t.shape)
            {
                writer.Write(d);
            }

            writer.Flush();
            using var host = t.cpu().contiguous();
            host.WriteBytesToStream(writer.BaseStream);
        }
    }

    /// <summary>
    /// Reads a record written by <see cref="Write"/>. <paramref name="check"/> sees each tensor's key, dtype and shape
    /// before its bytes are read (so a wrong file fails before a large allocation) and throws to refuse it.
    /// </summary>
    public static StateRecord Read(BinaryReader reader, int index, Action<string, ScalarType, long[]> check)
    {
        string magic;
        try
        {
            magic = reader.ReadString();
        }
        catch (EndOfStreamException e)
        {
            throw new OptimizerStateMismatchException($"Optimizer state of parameter {index}: the stream ended.", e);
        }

        if (magic != Magic)
        {
            throw new OptimizerStateMismatchException(index, "format", $"not a BnbDist optimizer state (header '{magic}').");
        }

        var kind = reader.ReadString();
        var step = reader.ReadInt64();
        if (!reader.ReadBoolean())
        {
            return new StateRecord(kind, step, null);
        }

        var count = reader.ReadInt32();
        if (count is < 0 or > 16)
        {
            throw new OptimizerStateMismatchException(index, "format", $"{count} state tensors.");
        }

        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (var i = 0; i < count; i++)
        {
            var key = reader.ReadString();
            var dtype = (ScalarType)reader.ReadInt32();
            var ndim = reader.ReadInt64();
            if (ndim is < 0 or > 8)
            {
                throw new OptimizerStateMismatchException(index, key, $"{ndim} dimensions.");
            }

            var shape = new long[ndim];
            for (var d = 0; d < ndim; d++)
            {
                shape[d] = reader.ReadInt64();
            }

            check(key, dtype, shape);
            var t = empty(shape, dtype);
            t.ReadBytesFromStream(reader.BaseStream);
            tensors[key] = t;
        }

        return new StateRecord(kind, step, tensors);
    }
}
