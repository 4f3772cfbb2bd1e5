using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Tokenization;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Data;

/// <summary>
/// A tokenized corpus packed into fixed-length sequences: documents (each ending in the end-of-text token) are
/// concatenated and cut into windows of <see cref="SequenceLength"/> tokens; the incomplete tail is dropped. The
/// views (<see cref="Shuffled"/>, <see cref="Shard"/>, <see cref="SplitHeldOut"/>) share the token storage and
/// only reorder or select sequence indices, deterministically.
/// </summary>
public sealed class PackedDataset
{
    private readonly int[] tokens;
    private readonly int[] indices;

    private PackedDataset(int[] tokens, int sequenceLength, int[] indices)
    {
        this.tokens = tokens;
        SequenceLength = sequenceLength;
        this.indices = indices;
    }

    /// <summary>Tokens per sequence.</summary>
    public int SequenceLength { get; }

    /// <summary>Sequences in this view.</summary>
    public int Count => indices.Length;

    /// <summary>Tokens in this view.</summary>
    public long TokenCount => (long)Count * SequenceLength;

    /// <summary>Positions of this view's sequences in the packed corpus (for checks and logs).</summary>
    public IReadOnlyList<int> SequenceIndices => indices;

    /// <summary>Packs token-id documents (end-of-text already appended) into sequences.</summary>
    /// <exception cref="ArgumentException">Fewer tokens than one sequence.</exception>
    public static PackedDataset Pack(IEnumerable<int[]> documents, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 2);
        var all = documents.SelectMany(d => d).ToArray();
        var count = all.Length / sequenceLength;
        if (count == 0)
        {
            throw new ArgumentException($"the corpus has {all.Length} tokens, fewer than one sequence of {sequenceLength}.", nameof(documents));
        }

        Array.Resize(ref all, count * sequenceLength);
        return new PackedDataset(all, sequenceLength, [.. Enumerable.Range(0, count)]);
    }

    /// <summary>Tokenizes documents (in parallel; order kept) and packs them.</summary>
    /// <exception cref="EmptyCorpusException">No documents.</exception>
    public static PackedDataset FromDocuments(IReadOnlyList<TextDocument> documents, BpeTokenizer tokenizer, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (documents.Count == 0)
        {
            throw new EmptyCorpusException("corpus", "(no documents)");
        }

        var encoded = new int[documents.Count][];
        Parallel.For(0, documents.Count, i => encoded[i] = tokenizer.EncodeDocument(documents[i].Text));
        return Pack(encoded, sequenceLength);
    }

    /// <summary>Token ids of sequence <paramref name="i"/> of this view.</summary>
    public ReadOnlySpan<int> Sequence(int i) => tokens.AsSpan(indices[i] * SequenceLength, SequenceLength);

    /// <summary>
    /// Splits off every k-th sequence (k = round(1 / fraction)) as held-out data, so held-out text comes from every part
    /// of the corpus; the rest is the training view. Split before shuffling or sharding.
    /// </summary>
    public (PackedDataset Train, PackedDataset HeldOut) SplitHeldOut(double fraction)
    {
        if (!(fraction > 0 && fraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "held-out fraction must be in (0, 1).");
        }

        var k = Math.Max(2, (int)Math.Round(1 / fraction));
        var heldOut = indices.Where((_, i) => i % k == k - 1).ToArray();
        if (heldOut.Length == 0)
        {
            throw new ArgumentException($"{Count} sequences leave none held out at fraction {fraction}.", nameof(fraction));
        }

        return (new(tokens, SequenceLength, [.. indices.Where((_, i) => i % k != k - 1)]), new(tokens, SequenceLength, heldOut));
    }

    /// <summary>This view in a seeded order (same seed → same order on every rank and machine).</summary>
    public PackedDataset Shuffled(long seed) =>
        new(tokens, SequenceLength, [.. SplitMix64.Permutation(Count, seed).Select(i => indices[i])]);

    /// <summary>
    /// Rank <paramref name="rank"/>'s part of this view: sequences rank, rank + worldSize, … Ranks' parts are disjoint
    /// and together cover the view; with <paramref name="evenLength"/> the last Count mod worldSize sequences are
    /// dropped so that every rank gets the same number (and runs the same number of steps).
    /// </summary>
    public PackedDataset Shard(int rank, int worldSize, bool evenLength = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, worldSize);
        var usable = evenLength ? Count / worldSize * worldSize : Count;
        var mine = new List<int>(usable / worldSize + 1);
        for (var i = rank; i < usable; i += worldSize)
        {
            mine.Add(indices[i]);
        }

        return new PackedDataset(tokens, SequenceLength, [.. mine]);
    }

    /// <summary>The first <paramref name="count"/> sequences of this view (or all, if fewer).</summary>
    public PackedDataset Take(int count) => new(tokens, SequenceLength, [.. indices.Take(count)]);

    /// <summary>Sequences [start, start + count) of this view as an int64 tensor [count, SequenceLength].</summary>
    public Tensor Batch(int start, int count, Device? device = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + count, Count);
        var data = new long[count * SequenceLength];
        for (var b = 0; b < count; b++)
        {
            var seq = Sequence(start + b);
            for (var t = 0; t < SequenceLength; t++)
            {
                data[(b * SequenceLength) + t] = seq[t];
            }
        }

        var batch = tensor(data, [count, SequenceLength], ScalarType.Int64);
        return device is null || device.type == TorchSharp.DeviceType.CPU ? batch : batch.to(device);
    }

    /// <summary>Consecutive batches of this view; a final partial batch is kept unless <paramref name="dropLast"/>.</summary>
    public IEnumerable<Tensor> Batches(int batchSize, Device? device = null, bool dropLast = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        for (var start = 0; start < Count; start += batchSize)
        {
            var n = Math.Min(batchSize, Count - start);
            if (n < batchSize && dropLast)
            {
                yield break;
            }

            yield return Batch(start, n, device);
        }
    }
}
