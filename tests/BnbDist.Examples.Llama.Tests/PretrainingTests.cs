using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Pretraining;
using BnbDist.Examples.Llama.Tokenization;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>The base-model recipe end to end on a tiny synthetic corpus: trains, saves a loadable directory, then skips.</summary>
public sealed class PretrainingTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("bnbdist-pre-").FullName;

    public void Dispose() => Directory.Delete(root, true);

    [Fact]
    public void PretrainsOnceThenUsesTheCache()
    {
        var sotu = SotuCorpus.DataDirectory(root);
        Directory.CreateDirectory(sotu);
        var docs = TestText.Documents(12, wordsEach: 150);
        for (var i = 0; i < docs.Count; i++)
        {
            File.WriteAllText(Path.Combine(sotu, $"{1790 + i}_x_n.txt"), docs[i]);
        }

        var options = new PretrainOptions
        {
            VocabSize = 320,
            HiddenSize = 32,
            Layers = 1,
            Heads = 4,
            KeyValueHeads = 2,
            IntermediateSize = 64,
            MaxPositions = 64,
            SequenceLength = 32,
            BatchSize = 4,
            Steps = 30,
            WarmupSteps = 3,
            LearningRate = 1e-2,
            HeldOutFraction = 0.1,
            LogEvery = 10,
        };
        var lines = new List<string>();
        var first = BaseModelPretraining.EnsureBaseModel(options, root, lines.Add);
        Assert.False(first.Cached);
        Assert.Equal(30, first.Steps);
        Assert.True(first.HeldOutLoss < Math.Log(320) - 1, $"held-out loss {first.HeldOutLoss}");
        Assert.Contains(lines, l => l.StartsWith("step 30/30", StringComparison.Ordinal));

        var dir = DataCache.BaseModelDirectory(root);
        var loaded = LlamaCheckpoint.Load(dir);
        Assert.Equal(320, loaded.Config.VocabSize);
        Assert.True(loaded.Config.TieWordEmbeddings);

        var second = BaseModelPretraining.EnsureBaseModel(options, root, lines.Add);
        Assert.True(second.Cached);
        Assert.Equal(first.HeldOutLoss, second.HeldOutLoss);

        // A cache whose tokenizer was swapped is not trusted: it is rebuilt.
        BpeTokenizer.Train(TestText.Documents(3, seed: 1), 320).Save(Path.Combine(dir, LlamaCheckpoint.TokenizerFile));
        Assert.False(BaseModelPretraining.EnsureBaseModel(options, root, lines.Add).Cached);
    }

    [Fact]
    public void TimeBudgetFitsTheStepCountAndStillAnneals()
    {
        var docs = TestText.Documents(12, wordsEach: 150).Select((t, i) => new TextDocument($"d{i}", t)).ToList();
        var options = new PretrainOptions
        {
            VocabSize = 300,
            HiddenSize = 16,
            Layers = 1,
            Heads = 2,
            KeyValueHeads = 1,
            IntermediateSize = 32,
            MaxPositions = 32,
            SequenceLength = 16,
            BatchSize = 2,
            Steps = 1_000_000,
            TimeBudget = TimeSpan.FromSeconds(2),
            HeldOutFraction = 0.1,
            LogEvery = 1_000_000,
        };
        var lines = new List<string>();
        var result = BaseModelPretraining.Pretrain(options, docs, Path.Combine(root, "budget"), lines.Add);
        Assert.InRange(result.Steps, options.CalibrationSteps, options.Steps - 1);
        Assert.InRange(result.Seconds, 1, 6);
        Assert.Contains(lines, l => l.StartsWith("time budget", StringComparison.Ordinal));
        var last = Assert.Single(lines, l => l.StartsWith($"step {result.Steps}/{result.Steps} ", StringComparison.Ordinal));
        var lr = double.Parse(last.Split("lr ")[1].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(lr, 0.1 * options.LearningRate, 0.15 * options.LearningRate); // annealed to the floor
    }

    [Fact]
    public void MissingCorpusSaysHowToFetchIt()
    {
        var ex = Assert.Throws<CorpusNotFoundException>(() => BaseModelPretraining.EnsureBaseModel(new PretrainOptions(), root));
        Assert.Contains(SotuCorpus.DataDirectory(root), ex.Message, StringComparison.Ordinal);
        Assert.Contains(DataCache.FetchCommand, ex.Message, StringComparison.Ordinal);
    }
}
