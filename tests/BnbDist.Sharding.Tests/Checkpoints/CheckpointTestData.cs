using System.Text;
using BnbDist.Sharding.Checkpoints;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>
/// Deterministic checkpoint contents shared by the tests and the worker processes: full tensors of several dtypes,
/// sizes not divisible by the world sizes and several atom sizes (one tensor of a single atom, one empty), each rank's
/// slices of them, replicated tensors and per-rank extras, all derived from (name, step[, rank]).
/// </summary>
internal static class CheckpointTestData
{
    /// <summary>(name, dtype, global shape, units per atom).</summary>
    public static readonly (string Name, ScalarType DType, long[] Shape, long UnitsPerAtom)[] Tensors =
    [
        ("layers.0.weight", ScalarType.Byte, [37, 3], 4),
        ("layers.0.weight.absmax", ScalarType.Float32, [1001], 7),
        ("layers.0.weight.nested_absmax", ScalarType.Float32, [5], 64),
        ("layers.1.weight", ScalarType.Byte, [64, 65], 256),
        ("optim.state.0.state1", ScalarType.Byte, [4099], 2048),
        ("optim.state.0.absmax1", ScalarType.Float32, [3], 1),
        ("lora.A", ScalarType.BFloat16, [13, 8], 8),
        ("empty", ScalarType.Float32, [0], 1),
    ];

    public static Tensor Full(string name, long step)
    {
        var (_, dtype, shape, _) = Tensors.Single(t => t.Name == name);
        var n = (int)shape.Aggregate(1L, (a, b) => a * b);
        var rng = new Random(HashCode(name) ^ (int)step);
        if (dtype == ScalarType.Byte)
        {
            var bytes = new byte[n];
            rng.NextBytes(bytes);
            return tensor(bytes).reshape(shape);
        }

        var values = Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        using var f = tensor(values).reshape(shape);
        return f.to_type(dtype);
    }

    public static CheckpointState State(long step, int rank, int worldSize) => new(
        [.. Tensors.Select(t =>
        {
            using var full = Full(t.Name, step);
            var layout = ShardLayout.ForLength(full.numel(), t.UnitsPerAtom, worldSize);
            var range = layout.Slice(rank, full.numel(), t.UnitsPerAtom);
            using var flat = full.reshape(-1);
            return new ShardedTensor(t.Name, flat.narrow(0, range.Start, range.Length).clone(), t.Shape, layout, t.UnitsPerAtom, rank);
        })],
        new Dictionary<string, Tensor>
        {
            ["code"] = linspace(-1, 1, 16),
            ["layers.0.weight.quant_state"] = tensor(Encoding.UTF8.GetBytes($"{{\"quant_type\":\"nf4\",\"blocksize\":64,\"step\":{step}}}")),
        },
        new Dictionary<string, Tensor>
        {
            ["rng_state"] = tensor(Enumerable.Range(0, 24).Select(i => (byte)((i * 7) + rank + step)).ToArray()),
            ["loader_position"] = tensor(new long[] { (step * 1000) + rank }),
        });

    /// <summary>The bytes of a tensor (any dtype), to compare byte for byte.</summary>
    public static byte[] Bytes(Tensor t)
    {
        using var ms = new MemoryStream();
        TensorBytes.WriteTo(t, chunk => ms.Write(chunk));
        return ms.ToArray();
    }

    /// <summary>
    /// Checks a loaded checkpoint against <see cref="State"/>: this rank's slice of every tensor for its world size (the
    /// full tensor's bytes in that range), the replicated tensors, and the extras when the world size was unchanged.
    /// Returns the first difference, or null.
    /// </summary>
    public static string? Difference(LoadedCheckpoint loaded, long step)
    {
        var expected = State(step, loaded.Rank, loaded.WorldSize);
        foreach (var st in expected.Sharded)
        {
            if (!loaded.Sharded.TryGetValue(st.Name, out var got))
            {
                return $"missing {st.Name}";
            }

            if (got.Range != st.Range || got.Layout.Atoms != st.Layout.Atoms || got.Layout.WorldSize != st.Layout.WorldSize || got.Local.dtype != st.Local.dtype
                || !got.GlobalShape.SequenceEqual(st.GlobalShape) || !Bytes(got.Local).AsSpan().SequenceEqual(Bytes(st.Local)))
            {
                return $"{st.Name} differs on rank {loaded.Rank} of {loaded.WorldSize}";
            }
        }

        foreach (var (name, t) in expected.Replicated!)
        {
            if (!loaded.Replicated.TryGetValue(name, out var got) || !Bytes(got).AsSpan().SequenceEqual(Bytes(t)))
            {
                return $"replicated {name} differs";
            }
        }

        if (!loaded.Resharded)
        {
            foreach (var (name, t) in expected.Extras!)
            {
                if (!loaded.Extras.TryGetValue(name, out var got) || !Bytes(got).AsSpan().SequenceEqual(Bytes(t)))
                {
                    return $"extra {name} differs on rank {loaded.Rank}";
                }
            }
        }

        return loaded.Step == step ? null : $"step {loaded.Step}, expected {step}";
    }

    private static int HashCode(string s) => s.Aggregate(17, (h, c) => unchecked((h * 31) + c));
}
