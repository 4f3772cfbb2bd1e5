using BnbDist.Examples.Llama.Data;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Tokenization;
using BnbDist.Examples.Llama.Training;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>Schedule, loss, trainer, perplexity and generation on a tiny model.</summary>
public sealed class TrainingTests
{
    [Fact]
    public void CosineScheduleWarmsUpThenDecaysToTheFloor()
    {
        var s = new CosineSchedule(1e-3, warmupSteps: 10, totalSteps: 110, minRatio: 0.1);
        Assert.Equal(1e-4, s.LearningRate(0), 12);
        Assert.Equal(1e-3, s.LearningRate(9), 12);
        Assert.Equal(1e-3, s.LearningRate(10), 12);
        Assert.Equal(0.55e-3, s.LearningRate(60), 12);
        Assert.Equal(1e-4, s.LearningRate(110), 12);
        Assert.Equal(1e-4, s.LearningRate(500), 12);
        Assert.True(Enumerable.Range(10, 100).All(i => s.LearningRate(i + 1) <= s.LearningRate(i)));
    }

    [Fact]
    public void LossIsNextTokenCrossEntropy()
    {
        // Logits that put probability p on the true next token everywhere give loss -ln p.
        using var ids = tensor(new long[] { 1, 2, 3, 0 }, [1, 4], ScalarType.Int64);
        var logits = zeros(1, 4, 4);
        for (var t = 0; t < 3; t++)
        {
            logits[0, t, ids[0, t + 1].item<long>()] = 2f;
        }

        var p = Math.Exp(2) / (Math.Exp(2) + 3);
        Assert.Equal(-Math.Log(p), CausalLm.Loss(logits, ids).item<float>(), 5);
        Assert.Equal(-3 * Math.Log(p), CausalLm.SummedLoss(logits, ids).item<float>(), 4);
        Assert.Equal(3, CausalLm.Predictions(ids));
    }

    [Fact]
    public void TrainerLowersTheLossAndPerplexityAddsUpAcrossShards()
    {
        manual_seed(20);
        var docs = TestText.Documents(8, wordsEach: 120);
        var tok = BpeTokenizer.Train(docs, 300);
        var data = PackedDataset.Pack(docs.Select(tok.EncodeDocument), 16);
        var model = new LlamaForCausalLM(TinyLlama.Config(vocab: tok.VocabSize, tied: true));
        var before = Perplexity.Evaluate(model, data, 8);
        Assert.Equal(Math.Log(tok.VocabSize), before.MeanLoss, 0); // random init ≈ uniform

        using var optimizer = optim.AdamW(model.parameters(), 1e-2);
        var trainer = new CausalLmTrainer(model, optimizer, new CosineSchedule(1e-2, 5, 60));
        var losses = new List<double>();
        for (var step = 0; step < 60; step++)
        {
            using var a = data.Batch((step * 8) % (data.Count - 8), 4);
            using var b = data.Batch(((step * 8) + 4) % (data.Count - 8), 4);
            var r = trainer.Step([a, b]); // two micro-batches: gradient accumulation
            Assert.Equal(step, r.Step);
            Assert.Equal(2 * 4 * 16, r.Tokens);
            losses.Add(r.Loss);
        }

        Assert.True(losses.TakeLast(10).Average() < losses.Take(5).Average() - 1.5, $"loss {losses.Take(5).Average():F2} -> {losses.TakeLast(10).Average():F2}");
        var after = Perplexity.Evaluate(model, data, 8);
        Assert.True(after.Perplexity < before.Perplexity / 4, $"perplexity {before.Perplexity:F1} -> {after.Perplexity:F1}");

        // Two ranks' sums add up to the whole.
        var parts = Perplexity.Evaluate(model, data.Shard(0, 2, evenLength: false), 8) + Perplexity.Evaluate(model, data.Shard(1, 2, evenLength: false), 8);
        Assert.Equal(after.Predictions, parts.Predictions);
        Assert.Equal(after.NllSum, parts.NllSum, after.NllSum * 1e-5);
        Assert.True(model.training);
    }

    [Fact]
    public void GenerationIsDeterministicForGreedyAndSeededTopK()
    {
        manual_seed(21);
        var tok = BpeTokenizer.Train(TestText.Documents(5), 300);
        var model = new LlamaForCausalLM(TinyLlama.Config(vocab: tok.VocabSize, maxPositions: 16));
        var greedy = TextGenerator.Generate(model, tok, "the people", 16, new GenerationOptions { MaxNewTokens = 20 });
        Assert.Equal(greedy, TextGenerator.Generate(model, tok, "the people", 16, new GenerationOptions { MaxNewTokens = 20 }));
        Assert.NotEmpty(greedy);

        var topK = new GenerationOptions { MaxNewTokens = 20, TopK = 50, Temperature = 1.5, Seed = 3 };
        var sampled = TextGenerator.Generate(model, tok, "", 16, topK);
        Assert.Equal(sampled, TextGenerator.Generate(model, tok, "", 16, topK));
        Assert.NotEqual(sampled, TextGenerator.Generate(model, tok, "", 16, topK with { Seed = 4 }));
    }
}
