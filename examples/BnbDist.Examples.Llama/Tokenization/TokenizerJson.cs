using System.Text.Encodings.Web;
using System.Text.Json;

namespace BnbDist.Examples.Llama.Tokenization;

/// <summary>Hugging Face's <c>tokenizer.json</c> for a byte-level BPE: the subset <see cref="BpeTokenizer"/> uses.</summary>
internal static class TokenizerJson
{
    public static void Save(string path, string[] tokens, (int Left, int Right)[] merges, Dictionary<string, int> special)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + $".{Environment.ProcessId}.tmp";
        using (var stream = File.Create(tmp))
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            foreach (var (content, id) in special.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteNull("normalizer");
            WriteByteLevel(w, "pre_tokenizer", addPrefixSpace: false);
            w.WriteNull("post_processor");
            WriteByteLevel(w, "decoder", addPrefixSpace: true);
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteBoolean("ignore_merges", false);
            w.WriteStartObject("vocab");
            for (var id = 0; id < tokens.Length; id++)
            {
                w.WriteNumber(tokens[id], id);
            }

            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (a, b) in merges)
            {
                w.WriteStringValue(tokens[a] + " " + tokens[b]);
            }

            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }

        File.Move(tmp, full, overwrite: true);
    }

    public static (string[] Tokens, int[] ByteToId, (int, int)[] Merges, Dictionary<string, int> Special) Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException ex)
        {
            throw new TokenizerFormatException(path, $"not valid JSON: {ex.Message}", ex);
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object ||
                !model.TryGetProperty("type", out var type) || type.GetString() != "BPE")
            {
                throw new TokenizerFormatException(path, "model.type is not \"BPE\".");
            }

            if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object ||
                !pre.TryGetProperty("type", out var preType) || preType.GetString() != "ByteLevel")
            {
                throw new TokenizerFormatException(path, "pre_tokenizer is not ByteLevel (only GPT-2-style byte-level BPE is supported).");
            }

            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
            {
                throw new TokenizerFormatException(path, "model.vocab is missing.");
            }

            foreach (var p in vocabJson.EnumerateObject())
            {
                vocab[p.Name] = p.Value.TryGetInt32(out var id) && id >= 0 ? id : throw new TokenizerFormatException(path, $"vocab entry '{p.Name}' has no valid id.");
            }

            var special = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var t in added.EnumerateArray())
                {
                    var content = t.GetProperty("content").GetString() ?? throw new TokenizerFormatException(path, "an added token has no content.");
                    var id = t.GetProperty("id").GetInt32();
                    special[content] = id;
                    vocab.TryAdd(content, id);
                }
            }

            var tokens = new string[vocab.Count];
            foreach (var (token, id) in vocab)
            {
                if (id >= tokens.Length || tokens[id] is not null)
                {
                    throw new TokenizerFormatException(path, $"token ids are not 0..{tokens.Length - 1}, each once (id {id} of '{token}').");
                }

                tokens[id] = token;
            }

            var byteToId = new int[256];
            for (var b = 0; b < 256; b++)
            {
                byteToId[b] = vocab.TryGetValue(ByteLevel.ToChar((byte)b).ToString(), out var id)
                    ? id
                    : throw new TokenizerFormatException(path, $"the vocabulary lacks byte 0x{b:X2}: not a byte-level BPE.");
            }

            return (tokens, byteToId, ReadMerges(path, model, vocab), special);
        }
    }

    private static (int, int)[] ReadMerges(string path, JsonElement model, Dictionary<string, int> vocab)
    {
        if (!model.TryGetProperty("merges", out var mergesJson) || mergesJson.ValueKind != JsonValueKind.Array)
        {
            throw new TokenizerFormatException(path, "model.merges is missing.");
        }

        var merges = new List<(int, int)>();
        foreach (var m in mergesJson.EnumerateArray())
        {
            // Older files write "left right", newer ones ["left", "right"].
            var parts = m.ValueKind == JsonValueKind.String ? m.GetString()!.Split(' ') : [.. m.EnumerateArray().Select(e => e.GetString() ?? string.Empty)];
            if (parts.Length != 2 || !vocab.TryGetValue(parts[0], out var a) || !vocab.TryGetValue(parts[1], out var b) || !vocab.ContainsKey(parts[0] + parts[1]))
            {
                throw new TokenizerFormatException(path, $"merge {merges.Count} ({m.GetRawText()}) does not name two tokens whose concatenation is in the vocabulary.");
            }

            merges.Add((a, b));
        }

        return [.. merges];
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string name, bool addPrefixSpace)
    {
        w.WriteStartObject(name);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", addPrefixSpace);
        w.WriteBoolean("trim_offsets", true);
        w.WriteBoolean("use_regex", true);
        w.WriteEndObject();
    }
}
