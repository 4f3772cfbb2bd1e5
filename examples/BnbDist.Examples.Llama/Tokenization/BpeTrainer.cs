using System.Text;

namespace BnbDist.Examples.Llama.Tokenization;

/// <summary>
/// Learns byte-level BPE merges from text (the classic algorithm: repeatedly merge the most frequent adjacent pair).
/// Deterministic: ties go to the pair with the smaller (left, right) ids, and nothing depends on hashing order.
/// Pair counts are updated incrementally, touching only the words that contain the merged pair.
/// </summary>
internal static class BpeTrainer
{
    /// <summary>Learns up to <paramref name="mergeCount"/> merges; stops early when no pair occurs twice.</summary>
    /// <returns>The merges in order; merge i creates token id 256 + i.</returns>
    public static List<(int Left, int Right)> Train(IEnumerable<string> texts, int mergeCount)
    {
        var (words, freqs) = CountWords(texts);
        var pairCounts = new Dictionary<long, long>();
        var pairWords = new Dictionary<long, List<int>>();
        for (var w = 0; w < words.Count; w++)
        {
            var sym = words[w];
            for (var i = 0; i + 1 < sym.Length; i++)
            {
                var key = Key(sym[i], sym[i + 1]);
                pairCounts[key] = pairCounts.GetValueOrDefault(key) + freqs[w];
                Where(pairWords, key).Add(w);
            }
        }

        var heap = new PriorityQueue<long, (long Count, long Key)>(Comparer<(long Count, long Key)>.Create(
            (x, y) => x.Count != y.Count ? y.Count.CompareTo(x.Count) : x.Key.CompareTo(y.Key)));
        foreach (var (key, count) in pairCounts)
        {
            heap.Enqueue(key, (count, key));
        }

        var merges = new List<(int, int)>(mergeCount);
        var stamp = new int[words.Count];
        var changed = new HashSet<long>();
        while (merges.Count < mergeCount && heap.TryDequeue(out var best, out var priority))
        {
            if (pairCounts.GetValueOrDefault(best) != priority.Count)
            {
                continue; // stale heap entry
            }

            if (priority.Count < 2)
            {
                break;
            }

            var (a, b) = ((int)(best >> 32), (int)(uint)best);
            var newId = 256 + merges.Count;
            merges.Add((a, b));
            changed.Clear();
            foreach (var w in pairWords[best])
            {
                if (stamp[w] == newId)
                {
                    continue; // listed twice
                }

                stamp[w] = newId;
                var merged = Merge(words[w], a, b, newId);
                if (merged is null)
                {
                    continue;
                }

                AddPairs(words[w], -freqs[w], pairCounts, changed, null, w);
                AddPairs(merged, freqs[w], pairCounts, changed, pairWords, w, newId);
                words[w] = merged;
            }

            pairWords.Remove(best);
            foreach (var key in changed)
            {
                if (pairCounts.TryGetValue(key, out var count) && count > 0)
                {
                    heap.Enqueue(key, (count, key));
                }
            }
        }

        return merges;
    }

    private static (List<int[]> Words, List<long> Freqs) CountWords(IEnumerable<string> texts)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var text in texts)
        {
            foreach (var word in ByteLevel.PreTokenize(text))
            {
                counts[word] = counts.GetValueOrDefault(word) + 1;
            }
        }

        var words = new List<int[]>(counts.Count);
        var freqs = new List<long>(counts.Count);
        foreach (var (word, count) in counts.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            words.Add([.. Encoding.UTF8.GetBytes(word).Select(x => (int)x)]);
            freqs.Add(count);
        }

        return (words, freqs);
    }

    private static int[]? Merge(int[] sym, int a, int b, int newId)
    {
        List<int>? result = null;
        for (var i = 0; i < sym.Length; i++)
        {
            if (i + 1 < sym.Length && sym[i] == a && sym[i + 1] == b)
            {
                result ??= [.. sym.Take(i)];
                result.Add(newId);
                i++;
            }
            else
            {
                result?.Add(sym[i]);
            }
        }

        return result?.ToArray();
    }

    private static void AddPairs(int[] sym, long delta, Dictionary<long, long> counts, HashSet<long> changed,
        Dictionary<long, List<int>>? where, int word, int newId = -1)
    {
        for (var i = 0; i + 1 < sym.Length; i++)
        {
            var key = Key(sym[i], sym[i + 1]);
            counts[key] = counts.GetValueOrDefault(key) + delta;
            changed.Add(key);
            if (where is not null && (sym[i] == newId || sym[i + 1] == newId))
            {
                Where(where, key).Add(word);
            }
        }
    }

    private static List<int> Where(Dictionary<long, List<int>> where, long key)
    {
        if (!where.TryGetValue(key, out var list))
        {
            where[key] = list = [];
        }

        return list;
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;
}
