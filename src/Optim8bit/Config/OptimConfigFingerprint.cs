namespace BnbDist.Optim8bit.Config;

/// <summary>
/// What <see cref="Optimizer8bit.ConfigFingerprint"/> returns: a hash to compare cheaply across ranks, plus the
/// descriptions it covers, so that a mismatch can be reported by parameter.
/// </summary>
/// <param name="Hash">XxHash64 of the optimizer line and every parameter description.</param>
/// <param name="Optimizer">The optimizer's own settings (type, rule, optim_bits, min_8bit_size, paging).</param>
/// <param name="Parameters">One description per parameter, in parameter order.</param>
public sealed record OptimConfigFingerprint(ulong Hash, string Optimizer, IReadOnlyList<string> Parameters)
{
    /// <summary>The hash as 16 hex digits.</summary>
    public string HashHex => Hash.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Index of the first parameter whose description differs from <paramref name="other"/>'s (a missing one counts), or −1 if none does.</summary>
    public int FirstMismatchingParameter(OptimConfigFingerprint other)
    {
        ArgumentNullException.ThrowIfNull(other);
        var n = Math.Max(Parameters.Count, other.Parameters.Count);
        for (var i = 0; i < n; i++)
        {
            if (i >= Parameters.Count || i >= other.Parameters.Count || Parameters[i] != other.Parameters[i])
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Null when both fingerprints agree, else a sentence naming the first difference (optimizer settings or parameter).</summary>
    public string? DescribeMismatch(OptimConfigFingerprint other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (Hash == other.Hash && Optimizer == other.Optimizer && FirstMismatchingParameter(other) < 0)
        {
            return null;
        }

        if (Optimizer != other.Optimizer)
        {
            return $"optimizer settings differ: '{Optimizer}' vs '{other.Optimizer}'.";
        }

        var i = FirstMismatchingParameter(other);
        return $"parameter {i} differs: '{(i < Parameters.Count ? Parameters[i] : "(none)")}' vs '{(i < other.Parameters.Count ? other.Parameters[i] : "(none)")}'.";
    }
}
