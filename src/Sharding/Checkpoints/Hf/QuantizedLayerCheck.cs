namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Checks one 4-bit layer's bitsandbytes entries as bitsandbytes would load them — the packed JSON, and each tensor's
/// dtype and element count — from dtypes and counts alone (no tensor is read), so byte-level tools can use it.
/// </summary>
internal static class QuantizedLayerCheck
{
    /// <summary>
    /// Checks the layer <paramref name="prefix"/> (<c>Q.</c>): <paramref name="info"/> gives a key's safetensors dtype and
    /// element count (null: absent), <paramref name="fileOf"/> the file to name for a key. Keys under <c>Q.weight.</c>
    /// other than bitsandbytes' (and <paramref name="alsoAllowed"/>) are errors.
    /// </summary>
    public static PackedQuantStateFields Check(string prefix, string blobKey, byte[] blob, Func<string, (string DType, long Elements)?> info,
        IEnumerable<string> keysUnderWeight, Func<string, string> fileOf, params string[] alsoAllowed)
    {
        PackedQuantStateFields f;
        try
        {
            f = QuantState.ParsePackedJson(blobKey, blob);
        }
        catch (QuantStateFormatException ex)
        {
            throw new CheckpointException(CheckpointError.Corrupt, fileOf(blobKey), blobKey, ex.Message, ex);
        }

        var expected = new Dictionary<string, (string DType, long Elements)>(StringComparer.Ordinal)
        {
            [prefix + "weight"] = ("U8", (f.NumElements + 1) / 2),
            [prefix + "weight.absmax"] = (f.NestedBlockSize is null ? "F32" : "U8", f.Blocks),
            [prefix + "weight.quant_map"] = ("F32", 16),
        };
        if (f.NestedBlockSize is int nested)
        {
            expected[prefix + "weight.nested_absmax"] = ("F32", (f.Blocks + nested - 1) / nested);
            expected[prefix + "weight.nested_quant_map"] = ("F32", 256);
        }

        foreach (var (key, want) in expected)
        {
            var got = info(key) ?? throw new CheckpointException(CheckpointError.Incomplete, fileOf(key), key, "missing.");
            if (got != want)
            {
                throw new CheckpointException(CheckpointError.BadIndex, fileOf(key), key,
                    $"must be {want.DType} with {want.Elements} elements for the [{string.Join(", ", f.Shape)}] weight {blobKey} describes; it is {got.DType} with {got.Elements}.");
            }
        }

        var extra = keysUnderWeight.FirstOrDefault(k => k != blobKey && !expected.ContainsKey(k) && !alsoAllowed.Contains(k));
        if (extra is not null)
        {
            throw new CheckpointException(CheckpointError.BadIndex, fileOf(extra), extra, "unexpected: not a bitsandbytes quant-state key for this layer.");
        }

        return f;
    }
}
