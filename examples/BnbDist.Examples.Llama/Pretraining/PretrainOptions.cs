using BnbDist.Examples.Llama.Modeling;

namespace BnbDist.Examples.Llama.Pretraining;

/// <summary>
/// Settings of the self-made base model: a small Llama (GQA, SwiGLU, tied head) with a byte-level BPE trained on the
/// State of the Union corpus, sized to pretrain in a few minutes on two CPU cores.
/// </summary>
public sealed record PretrainOptions
{
    /// <summary>Tokenizer vocabulary (256 bytes + merges + end-of-text).</summary>
    public int VocabSize { get; init; } = 4096;

    /// <summary>Model width.</summary>
    public int HiddenSize { get; init; } = 256;

    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 4;

    /// <summary>Query heads.</summary>
    public int Heads { get; init; } = 8;

    /// <summary>Key/value heads.</summary>
    public int KeyValueHeads { get; init; } = 4;

    /// <summary>MLP width.</summary>
    public int IntermediateSize { get; init; } = 704;

    /// <summary>Model context (max_position_embeddings).</summary>
    public int MaxPositions { get; init; } = 512;

    /// <summary>Training sequence length.</summary>
    public int SequenceLength { get; init; } = 256;

    /// <summary>Sequences per step.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Optimizer steps at most.</summary>
    public int Steps { get; init; } = 2000;

    /// <summary>
    /// Wall-time budget for the training steps; null = run <see cref="Steps"/>. With a budget, the step time measured
    /// over the first <see cref="CalibrationSteps"/> steps fixes the step count (at most <see cref="Steps"/>) and the
    /// cosine schedule is laid over it, so training fits the budget on any machine and still anneals.
    /// </summary>
    public TimeSpan? TimeBudget { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Steps timed before the step count is fixed under a <see cref="TimeBudget"/>.</summary>
    public int CalibrationSteps { get; init; } = 10;

    /// <summary>Peak AdamW learning rate.</summary>
    public double LearningRate { get; init; } = 5e-3;

    /// <summary>Warm-up steps.</summary>
    public int WarmupSteps { get; init; } = 40;

    /// <summary>Final learning rate as a fraction of the peak.</summary>
    public double MinLearningRateRatio { get; init; } = 0.1;

    /// <summary>AdamW weight decay.</summary>
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>Gradient clipping threshold.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Fraction of sequences held out for the perplexity report.</summary>
    public double HeldOutFraction { get; init; } = 0.02;

    /// <summary>Seed of initialization and data order.</summary>
    public long Seed { get; init; } = 1234;

    /// <summary>Log a line every this many steps.</summary>
    public int LogEvery { get; init; } = 25;

    /// <summary>The model config these settings describe (vocab_size = the tokenizer's).</summary>
    public LlamaConfig ModelConfig(int vocabSize) => new LlamaConfig
    {
        VocabSize = vocabSize,
        HiddenSize = HiddenSize,
        IntermediateSize = IntermediateSize,
        NumHiddenLayers = Layers,
        NumAttentionHeads = Heads,
        NumKeyValueHeads = KeyValueHeads,
        MaxPositionEmbeddings = MaxPositions,
        RmsNormEps = 1e-5,
        RopeTheta = 10000,
        TieWordEmbeddings = true,
    }.Validated();
}
