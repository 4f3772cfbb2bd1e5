using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace BnbDist.Examples.Llama.Tokenization;

/// <summary>
/// A byte-level BPE tokenizer (GPT-2's scheme): any text round-trips, no unknown tokens. It trains on a corpus
/// (<see cref="Train"/>), and saves/loads Hugging Face's <c>tokenizer.json</c> layout (model type BPE with a ByteLevel
/// pre-tokenizer), so GPT-2-style tokenizer files load too. <see cref="Fingerprint"/> identifies the vocabulary and
/// merges, so a model can check that it is paired with the tokenizer it was trained with.
/// </summary>
public sealed class BpeTokenizer
{
    /// <summary>The end-of-text token (GPT-2's), used between documents.</summary>
    public const string EndOfText = "<|endoftext|>";

    private readonly string[] tokens;
    private readonly byte[]?[] tokenBytes;
    private readonly int[] byteToId;
    private readonly (int Left, int Right)[] merges;
    private readonly Dictionary<long, (int Rank, int Id)> mergeRanks;
    private readonly Dictionary<string, int> special;
    private readonly ConcurrentDictionary<string, int[]> cache = new(StringComparer.Ordinal);

    private BpeTokenizer(string[] tokens, int[] byteToId, (int, int)[] merges, Dictionary<string, int> special)
    {
        this.tokens = tokens;
        this.byteToId = byteToId;
        this.merges = merges;
        this.special = special;
        tokenBytes = [.. tokens.Select((t, id) => special.ContainsValue(id) ? null : ByteLevel.FromPrintable(t))];
        mergeRanks = [];
        var ids = tokens.Select((t, id) => (t, id)).ToDictionary(x => x.t, x => x.id, StringComparer.Ordinal);
        for (var r = 0; r < merges.Length; r++)
        {
            var (a, b) = merges[r];
            mergeRanks[Key(a, b)] = (r, ids[tokens[a] + tokens[b]]);
        }

        Fingerprint = ComputeFingerprint();
    }

    /// <summary>Number of token ids (the model's embedding rows must be at least this many).</summary>
    public int VocabSize => tokens.Length;

    /// <summary>Id of <see cref="EndOfText"/>, or null if the vocabulary has none.</summary>
    public int? EndOfTextId => special.TryGetValue(EndOfText, out var id) ? id : null;

    /// <summary>SHA-256 (hex) over the vocabulary, merges and special tokens; independent of JSON formatting.</summary>
    public string Fingerprint { get; }

    /// <summary>
    /// Trains a byte-level BPE with <paramref name="vocabSize"/> ids: 256 bytes, the learned merges, and
    /// <see cref="EndOfText"/> as the last id. Deterministic for the same texts in the same order.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">vocabSize is below 258.</exception>
    public static BpeTokenizer Train(IEnumerable<string> texts, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 258);
        var learned = BpeTrainer.Train(texts, vocabSize - 257);
        var tokens = new List<string>(vocabSize);
        tokens.AddRange(Enumerable.Range(0, 256).Select(b => ByteLevel.ToChar((byte)b).ToString()));
        foreach (var (a, b) in learned)
        {
            tokens.Add(tokens[a] + tokens[b]);
        }

        var special = new Dictionary<string, int>(StringComparer.Ordinal) { [EndOfText] = tokens.Count };
        tokens.Add(EndOfText);
        return new BpeTokenizer([.. tokens], [.. Enumerable.Range(0, 256)], [.. learned], special);
    }

    /// <summary>Token ids of <paramref name="text"/> (special-token text is encoded as ordinary text).</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3);
        foreach (var word in ByteLevel.PreTokenize(text))
        {
            ids.AddRange(cache.GetOrAdd(word, EncodeWord));
        }

        return [.. ids];
    }

    /// <summary>A document's ids followed by <see cref="EndOfText"/> (when the vocabulary has it).</summary>
    public int[] EncodeDocument(string text)
    {
        var ids = Encode(text);
        return EndOfTextId is int eot ? [.. ids, eot] : ids;
    }

    /// <summary>Text of token ids; invalid UTF-8 (a split multi-byte character) becomes U+FFFD.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        var text = new StringBuilder();
        foreach (var id in ids)
        {
            if ((uint)id >= (uint)tokens.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the vocabulary of {tokens.Length}.");
            }

            if (tokenBytes[id] is { } b)
            {
                bytes.AddRange(b);
                continue;
            }

            text.Append(Encoding.UTF8.GetString([.. bytes])).Append(tokens[id]);
            bytes.Clear();
        }

        return text.Append(Encoding.UTF8.GetString([.. bytes])).ToString();
    }

    /// <summary>The token string of an id (byte-level printable form).</summary>
    public string TokenOf(int id) => tokens[id];

    /// <summary>Writes Hugging Face's <c>tokenizer.json</c> layout (atomically: temp file, then rename).</summary>
    public void Save(string path) => TokenizerJson.Save(path, tokens, merges, special);

    /// <summary>Reads a <c>tokenizer.json</c> of a byte-level BPE (this class's files, GPT-2-style Hugging Face files).</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="TokenizerFormatException">Not a byte-level BPE, or inconsistent.</exception>
    public static BpeTokenizer Load(string path)
    {
        var (tokens, byteToId, merges, special) = TokenizerJson.Load(path);
        return new BpeTokenizer(tokens, byteToId, merges, special);
    }

    private int[] EncodeWord(string word)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        var ids = new List<int>(bytes.Length);
        foreach (var b in bytes)
        {
            ids.Add(byteToId[b]);
        }

        while (ids.Count > 1)
        {
            var best = (Rank: int.MaxValue, Id: -1);
            for (var i = 0; i + 1 < ids.Count; i++)
            {
                if (mergeRanks.TryGetValue(Key(ids[i], ids[i + 1]), out var m) && m.Rank < best.Rank)
                {
                    best = m;
                }
            }

            if (best.Id < 0)
            {
                break;
            }

            var (left, right) = merges[best.Rank];
            var merged = new List<int>(ids.Count);
            for (var i = 0; i < ids.Count; i++)
            {
                if (i + 1 < ids.Count && ids[i] == left && ids[i + 1] == right)
                {
                    merged.Add(best.Id);
                    i++;
                }
                else
                {
                    merged.Add(ids[i]);
                }
            }

            ids = merged;
        }

        return [.. ids];
    }

    private string ComputeFingerprint()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var t in tokens)
        {
            sha.AppendData(Encoding.UTF8.GetBytes(t + "\n"));
        }

        foreach (var (a, b) in merges)
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"{a} {b}\n"));
        }

        foreach (var (content, id) in special.OrderBy(kv => kv.Value))
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"{id} {content}\n"));
        }

        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;
}
