namespace BnbDist.Examples.Llama.Data;

/// <summary>
/// SplitMix64, a tiny seeded generator whose output is fixed by its definition (unlike <see cref="Random"/>, whose
/// algorithm is an implementation detail), so shuffles are identical on every machine and every rank.
/// </summary>
internal struct SplitMix64(ulong seed)
{
    private ulong state = seed;

    public ulong Next()
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform integer in [0, n) (Lemire's multiply-shift; the tiny bias is irrelevant for shuffling).</summary>
    public int NextBelow(int n) => (int)((UInt128)Next() * (ulong)n >> 64);

    /// <summary>A Fisher–Yates permutation of 0..n-1.</summary>
    public static int[] Permutation(int n, long seed)
    {
        var rng = new SplitMix64(unchecked((ulong)seed));
        var p = Enumerable.Range(0, n).ToArray();
        for (var i = n - 1; i > 0; i--)
        {
            var j = rng.NextBelow(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }

        return p;
    }
}
