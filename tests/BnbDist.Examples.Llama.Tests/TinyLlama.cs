using BnbDist.Examples.Llama.Modeling;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>Small configs for fast CPU tests.</summary>
internal static class TinyLlama
{
    public static LlamaConfig Config(int vocab = 300, int heads = 4, int kvHeads = 2, bool tied = false, int maxPositions = 32) => new()
    {
        VocabSize = vocab,
        HiddenSize = 32,
        IntermediateSize = 48,
        NumHiddenLayers = 2,
        NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads,
        MaxPositionEmbeddings = maxPositions,
        RmsNormEps = 1e-5,
        TieWordEmbeddings = tied,
    };
}
