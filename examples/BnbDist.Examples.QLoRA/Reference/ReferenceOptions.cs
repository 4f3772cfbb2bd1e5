using BnbDist.Examples.Llama.Modeling;

namespace BnbDist.Examples.QLoRA.Reference;

/// <summary>
/// The fixed reference configuration of issue #9's speed figures: a 1.1B Llama (TinyLlama's shape, random weights), NF4
/// with double quantization on every projection, LoRA r=16 alpha=32 on q/k/v/o/gate/up/down, PagedAdamW8bit, 4 × 512
/// tokens per step, bf16 compute, activation checkpointing, one GPU.
/// </summary>
public sealed record ReferenceOptions
{
    /// <summary>TinyLlama-1.1B's shape (<see cref="LlamaConfig.TinyLlama1B"/>).</summary>
    public static LlamaConfig TinyLlamaShape => LlamaConfig.TinyLlama1B;

    /// <summary>A tiny shape with the same structure (GQA 2:1, untied head) for CPU tests of the same code path.</summary>
    public static readonly LlamaConfig TinyTestShape = new()
    {
        VocabSize = 256,
        HiddenSize = 64,
        IntermediateSize = 96,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        MaxPositionEmbeddings = 64,
        RmsNormEps = 1e-5,
        TieWordEmbeddings = false,
    };

    /// <summary>The model's shape.</summary>
    public LlamaConfig Config { get; init; } = TinyLlamaShape;

    /// <summary>Sequences per step.</summary>
    public int Batch { get; init; } = 4;

    /// <summary>Tokens per sequence.</summary>
    public int SequenceLength { get; init; } = 512;

    /// <summary>Untimed steps first (allocator warm-up, kernel selection).</summary>
    public int WarmupSteps { get; init; } = 3;

    /// <summary>Timed steps (each one synchronized and timed on its own).</summary>
    public int TimedSteps { get; init; } = 10;

    /// <summary>LoRA rank.</summary>
    public int LoraRank { get; init; } = 16;

    /// <summary>LoRA alpha.</summary>
    public double LoraAlpha { get; init; } = 32;

    /// <summary>Activation checkpointing of the decoder layers.</summary>
    public bool GradientCheckpointing { get; init; } = true;

    /// <summary>Variants to run, in order (see <see cref="ReferenceVariant"/>); the first is the reference.</summary>
    public IReadOnlyList<ReferenceVariant> Variants { get; init; } = [ReferenceVariant.QLora, ReferenceVariant.Bf16Lora, ReferenceVariant.QLoraAdamW32];

    /// <summary>A variant stops taking timed steps once it has run this long (the run never hangs on a slow device).</summary>
    public double MaxSecondsPerVariant { get; init; } = 300;

    /// <summary>Seed of weights, LoRA init and token ids.</summary>
    public long Seed { get; init; } = 1234;
}

/// <summary>What a reference run trains.</summary>
public enum ReferenceVariant
{
    /// <summary>NF4 + double-quant base, LoRA, PagedAdamW8bit: the reference.</summary>
    QLora,

    /// <summary>bf16 frozen base (no quantization), LoRA, PagedAdamW8bit.</summary>
    Bf16Lora,

    /// <summary>NF4 + double-quant base, LoRA, 32-bit AdamW (BnbDist's fused AdamW32bit) instead of PagedAdamW8bit.</summary>
    QLoraAdamW32,
}
