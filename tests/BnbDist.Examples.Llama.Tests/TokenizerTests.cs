using System.Text;
using BnbDist.Examples.Llama.Tokenization;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>Byte-level BPE: exact round trips, deterministic training, compression, file round trip, bad files.</summary>
public sealed class TokenizerTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("bnbdist-tok-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void AnyTextRoundTripsIncludingBytesNeverSeenInTraining()
    {
        var tok = BpeTokenizer.Train(TestText.Documents(20), 400);
        var rng = new Random(3);
        var samples = new List<string> { "", " ", "\n\n  \t", "Hello, World! It's 2026.", "naïve café — 東京 🚀 \u0000 end", TestText.Documents(1, seed: 99)[0] };
        samples.Add(new string([.. Enumerable.Range(0, 500).Select(_ => (char)rng.Next(32, 0x2FF))]));
        foreach (var text in samples)
        {
            var ids = tok.Encode(text);
            Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
            Assert.Equal(text, tok.Decode(ids));
        }
    }

    [Fact]
    public void TrainingIsDeterministicAndLearnsTheRequestedVocabulary()
    {
        var docs = TestText.Documents(30);
        var a = BpeTokenizer.Train(docs, 380);
        var b = BpeTokenizer.Train(docs, 380);
        Assert.Equal(380, a.VocabSize);
        Assert.Equal(379, a.EndOfTextId);
        Assert.Equal(a.Fingerprint, b.Fingerprint);
        a.Save(Path.Combine(dir, "a.json"));
        b.Save(Path.Combine(dir, "b.json"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "a.json")), File.ReadAllBytes(Path.Combine(dir, "b.json")));

        // Merges compress: frequent words become single tokens, so far fewer ids than bytes.
        var text = TestText.Documents(1, seed: 11)[0];
        var ids = a.Encode(text);
        Assert.True(ids.Length * 3 < Encoding.UTF8.GetByteCount(text), $"{ids.Length} ids for {Encoding.UTF8.GetByteCount(text)} bytes");
        Assert.Single(a.Encode(" government"));

        // A different corpus gives a different tokenizer, and the fingerprint says so.
        Assert.NotEqual(a.Fingerprint, BpeTokenizer.Train(TestText.Documents(30, seed: 8), 380).Fingerprint);

        // A corpus with fewer repeated pairs than requested merges stops early: the vocabulary is what was learned.
        Assert.InRange(BpeTokenizer.Train(["abc abd"], 1000).VocabSize, 258, 262);
    }

    [Fact]
    public void SavedFileLoadsToTheSameTokenizer()
    {
        var tok = BpeTokenizer.Train(TestText.Documents(20), 420);
        var path = Path.Combine(dir, "tokenizer.json");
        tok.Save(path);
        var loaded = BpeTokenizer.Load(path);
        Assert.Equal(tok.Fingerprint, loaded.Fingerprint);
        Assert.Equal(tok.VocabSize, loaded.VocabSize);
        var text = TestText.Documents(3, seed: 5)[2];
        Assert.Equal(tok.Encode(text), loaded.Encode(text));
        Assert.Equal([.. tok.Encode("end."), tok.EndOfTextId!.Value], loaded.EncodeDocument("end."));
        Assert.Equal("<|endoftext|>", loaded.Decode([loaded.EndOfTextId!.Value]));
    }

    [Fact]
    public void HuggingFaceStyleMergesAsPairsAndGpt2ByteMappingAreRead()
    {
        // A hand-written GPT-2-style file: byte tokens at arbitrary ids, merges in the newer [left, right] form.
        var vocab = Enumerable.Range(0, 256).Select(b => ByteLevel.ToChar((byte)b).ToString()).Reverse().ToList();
        vocab.Add("Ġt");
        vocab.Add("Ġth");
        var vocabJson = string.Join(", ", vocab.Select((t, i) => $"{System.Text.Json.JsonSerializer.Serialize(t)}: {i}"));
        var json = "{\"added_tokens\": [{\"id\": " + vocab.Count + ", \"content\": \"<|endoftext|>\", \"special\": true}], " +
                   "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, " +
                   "\"model\": {\"type\": \"BPE\", \"vocab\": {" + vocabJson + "}, \"merges\": [[\"Ġ\", \"t\"], \"Ġt h\"]}}";
        var path = Path.Combine(dir, "gpt2.json");
        File.WriteAllText(path, json);
        var tok = BpeTokenizer.Load(path);
        Assert.Equal(259, tok.VocabSize);
        Assert.Equal([257, 255 - 'e'], tok.Encode(" the"));
        Assert.Equal(" the", tok.Decode(tok.Encode(" the")));
    }

    [Fact]
    public void BadTokenizerFilesAreTypedErrorsNamingTheFile()
    {
        var path = Path.Combine(dir, "bad.json");
        Assert.Throws<FileNotFoundException>(() => BpeTokenizer.Load(path));
        File.WriteAllText(path, "{\"model\": {\"type\": \"Unigram\"}}");
        Assert.Contains(path, Assert.Throws<TokenizerFormatException>(() => BpeTokenizer.Load(path)).Message, StringComparison.Ordinal);
        File.WriteAllText(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
        Assert.Contains("lacks byte", Assert.Throws<TokenizerFormatException>(() => BpeTokenizer.Load(path)).Message, StringComparison.Ordinal);
        File.WriteAllText(path, "not json");
        Assert.Throws<TokenizerFormatException>(() => BpeTokenizer.Load(path));
    }
}
