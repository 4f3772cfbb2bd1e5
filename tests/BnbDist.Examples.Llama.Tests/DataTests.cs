using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Data;
using BnbDist.Examples.Llama.Tokenization;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>Packing, held-out split, deterministic shuffle and rank sharding.</summary>
public sealed class DataTests
{
    private static PackedDataset Numbered(int sequences, int length = 4) =>
        PackedDataset.Pack([[.. Enumerable.Range(0, (sequences * length) + 3)]], length); // 3 tail tokens are dropped

    [Fact]
    public void PackingConcatenatesDocumentsAndDropsTheTail()
    {
        var data = PackedDataset.Pack([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], 3);
        Assert.Equal(3, data.Count);
        Assert.Equal([4, 5, 6], data.Sequence(1).ToArray());
        using var batch = data.Batch(1, 2);
        Assert.Equal([2L, 3], batch.shape);
        Assert.Equal(ScalarType.Int64, batch.dtype);
        Assert.Equal([4L, 5, 6, 7, 8, 9], batch.data<long>().ToArray());
        Assert.Throws<ArgumentException>(() => PackedDataset.Pack([[1, 2]], 3));
    }

    [Fact]
    public void CorpusIsTokenizedWithEndOfTextBetweenDocuments()
    {
        var docs = TestText.Documents(4).Select((t, i) => new TextDocument($"d{i}", t)).ToList();
        var tok = BpeTokenizer.Train(docs.Select(d => d.Text), 300);
        var data = PackedDataset.FromDocuments(docs, tok, 16);
        var expected = docs.SelectMany(d => tok.EncodeDocument(d.Text)).ToArray();
        Assert.Equal(expected.Length / 16, data.Count);
        Assert.Equal(4, expected.Count(t => t == tok.EndOfTextId));
        Assert.Equal(tok.EndOfTextId, expected[tok.EncodeDocument(docs[0].Text).Length - 1]);
        Assert.Equal(expected.Take(data.Count * 16), Enumerable.Range(0, data.Count).SelectMany(i => data.Sequence(i).ToArray()));
        Assert.Throws<EmptyCorpusException>(() => PackedDataset.FromDocuments([], tok, 16));
    }

    [Fact]
    public void HeldOutSplitIsDisjointAndSpreadOverTheCorpus()
    {
        var data = Numbered(100);
        var (train, heldOut) = data.SplitHeldOut(0.1);
        Assert.Equal(90, train.Count);
        Assert.Equal(10, heldOut.Count);
        Assert.Empty(train.SequenceIndices.Intersect(heldOut.SequenceIndices));
        Assert.Equal(Enumerable.Range(0, 100), train.SequenceIndices.Concat(heldOut.SequenceIndices).Order());
        Assert.True(heldOut.SequenceIndices.Min() < 10 && heldOut.SequenceIndices.Max() >= 90);
    }

    [Fact]
    public void ShuffleIsASeededPermutation()
    {
        var data = Numbered(50);
        var a = data.Shuffled(7).SequenceIndices;
        Assert.Equal(a, data.Shuffled(7).SequenceIndices);
        Assert.NotEqual(a, data.Shuffled(8).SequenceIndices);
        Assert.NotEqual(Enumerable.Range(0, 50), a);
        Assert.Equal(Enumerable.Range(0, 50), a.Order());
        Assert.Equal([0, 1, 2, 3], data.Shuffled(7).Sequence(a.ToList().IndexOf(0)).ToArray());
    }

    [Theory]
    [InlineData(103, 1)]
    [InlineData(103, 2)]
    [InlineData(103, 4)]
    [InlineData(5, 8)]
    public void RankShardsAreDisjointAndCoverTheData(int sequences, int worldSize)
    {
        var data = Numbered(sequences).Shuffled(3);
        var shards = Enumerable.Range(0, worldSize).Select(r => data.Shard(r, worldSize, evenLength: false).SequenceIndices).ToList();
        Assert.Equal(Enumerable.Range(0, sequences), shards.SelectMany(s => s).Order());

        var even = Enumerable.Range(0, worldSize).Select(r => data.Shard(r, worldSize).SequenceIndices).ToList();
        Assert.All(even, s => Assert.Equal(sequences / worldSize, s.Count));
        var used = even.SelectMany(s => s).ToList();
        Assert.Equal(used.Count, used.Distinct().Count());
        Assert.Equal(sequences % worldSize, sequences - used.Count);
        Assert.Throws<ArgumentOutOfRangeException>(() => data.Shard(worldSize, worldSize));
    }
}
