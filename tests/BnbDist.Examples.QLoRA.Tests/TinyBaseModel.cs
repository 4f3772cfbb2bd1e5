using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Tokenization;
using static TorchSharp.torch;

namespace BnbDist.Examples.QLoRA.Tests;

/// <summary>
/// A tiny Llama (random weights) with a BPE tokenizer trained on a small synthetic corpus, written like the example's
/// base model: what the QLoRA job tests fine-tune, so they need neither the data cache nor a pretraining run.
/// </summary>
internal static class TinyBaseModel
{
    private static readonly Lazy<(string Model, string Corpus)> Cached = new(Create);

    public static string ModelDirectory => Cached.Value.Model;

    public static string CorpusFile => Cached.Value.Corpus;

    private static (string, string) Create()
    {
        var root = Directory.CreateTempSubdirectory("bnbdist-qlora-fixture-").FullName;
        var corpus = Path.Combine(root, "corpus.txt");
        File.WriteAllText(corpus, Text(seed: 7, sentences: 900));
        var tokenizer = BpeTokenizer.Train([File.ReadAllText(corpus)], 320);
        manual_seed(11);
        var config = new LlamaConfig
        {
            VocabSize = tokenizer.VocabSize,
            HiddenSize = 64,
            IntermediateSize = 160,
            NumHiddenLayers = 2,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            MaxPositionEmbeddings = 64,
            TieWordEmbeddings = true,
        }.Validated();
        using var model = new LlamaForCausalLM(config);
        var dir = Path.Combine(root, "model");
        LlamaCheckpoint.Save(model, tokenizer, dir);
        return (dir, corpus);
    }

    /// <summary>Sentences from a small grammar: regular enough that a few LoRA steps visibly lower the loss.</summary>
    public static string Text(int seed, int sentences)
    {
        string[] adjectives = ["quiet", "bright", "small", "proud", "gentle", "sudden"];
        string[] nouns = ["house", "letter", "sister", "garden", "carriage", "evening"];
        string[] verbs = ["pleased", "followed", "surprised", "reached", "charmed", "disturbed"];
        var rng = new Random(seed);
        var lines = new List<string>();
        for (var i = 0; i < sentences; i++)
        {
            string Pick(string[] words) => words[rng.Next(words.Length)];
            lines.Add($"The {Pick(adjectives)} {Pick(nouns)} {Pick(verbs)} the {Pick(adjectives)} {Pick(nouns)}.");
            if (i % 6 == 5)
            {
                lines.Add(string.Empty);
            }
        }

        return string.Join('\n', lines);
    }
}
