namespace BnbDist.Examples.QLoRA;

/// <summary>Settings of one QLoRA fine-tuning run (command-line flags of <c>qlora</c>).</summary>
public sealed record QLoraOptions
{
    /// <summary>Base model folder (config.json, tokenizer.json, model.safetensors or a sharded index, or a bnb-4bit checkpoint).</summary>
    public required string ModelDirectory { get; init; }

    /// <summary>Plain-text corpus file to fine-tune on; null = Jane Austen's novels from the data cache.</summary>
    public string? CorpusFile { get; init; }

    /// <summary>Where checkpoints, metrics, the plot, the adapter and the summary go.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>Optimizer steps in total (a resumed run continues up to this count).</summary>
    public int Steps { get; init; } = 60;

    /// <summary>Tokens per training sequence.</summary>
    public int SequenceLength { get; init; } = 128;

    /// <summary>Sequences per micro-batch on each rank.</summary>
    public int MicroBatch { get; init; } = 4;

    /// <summary>Micro-batches per optimizer step (gradient accumulation).</summary>
    public int GradientAccumulation { get; init; } = 1;

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 2e-3;

    /// <summary>Linear warm-up steps before the cosine decay.</summary>
    public int WarmupSteps { get; init; } = 5;

    /// <summary>Global gradient-norm clip.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>LoRA rank.</summary>
    public int LoraRank { get; init; } = 16;

    /// <summary>LoRA alpha.</summary>
    public double LoraAlpha { get; init; } = 32;

    /// <summary>Save a checkpoint every this many steps (and at the end); 0 = only at the end.</summary>
    public int CheckpointEvery { get; init; } = 20;

    /// <summary>Complete checkpoints to keep.</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>Continue from the latest complete checkpoint in the output folder.</summary>
    public bool Resume { get; init; }

    /// <summary>Held-out sequences per rank for perplexity (before and after).</summary>
    public int EvalSequences { get; init; } = 16;

    /// <summary>Fraction of the corpus held out from training.</summary>
    public double HeldOutFraction { get; init; } = 0.05;

    /// <summary>Prompt of the generation sample before and after fine-tuning.</summary>
    public string Prompt { get; init; } = "It is a truth universally acknowledged";

    /// <summary>Tokens generated for each sample (0 = no sample).</summary>
    public int SampleTokens { get; init; } = 40;

    /// <summary>Seed of data order and LoRA initialization.</summary>
    public long Seed { get; init; } = 1234;

    /// <summary>Stop after this many steps of this run (for tests that kill and resume); 0 = run to <see cref="Steps"/>.</summary>
    public int StopAfter { get; init; }
}
