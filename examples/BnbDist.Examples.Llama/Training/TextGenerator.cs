using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Tokenization;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Training;

/// <summary>Sampling settings: greedy when <see cref="TopK"/> is 0 or 1, else top-k sampling at <see cref="Temperature"/>.</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate at most (stops early at end-of-text).</summary>
    public int MaxNewTokens { get; init; } = 60;

    /// <summary>Sample among the k most likely tokens; 0 or 1 = greedy.</summary>
    public int TopK { get; init; }

    /// <summary>Softmax temperature for sampling.</summary>
    public double Temperature { get; init; } = 0.8;

    /// <summary>Seed of the sampler (same seed → same text).</summary>
    public long Seed { get; init; } = 1;
}

/// <summary>Text continuation with a causal LM (no KV cache: each step re-reads the context, cropped to the model's window).</summary>
public static class TextGenerator
{
    /// <summary>Continues <paramref name="prompt"/>; returns only the generated text.</summary>
    /// <param name="model">Any ids → logits module (the Llama model, or it wrapped with LoRA/sharding).</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="prompt">Text to continue (may be empty: generation starts after end-of-text).</param>
    /// <param name="maxContext">The model's context (<see cref="LlamaConfig.MaxPositionEmbeddings"/>).</param>
    /// <param name="options">Greedy or top-k settings.</param>
    /// <param name="device">Where the model runs.</param>
    public static string Generate(Module<Tensor, Tensor> model, BpeTokenizer tokenizer, string prompt, int maxContext,
        GenerationOptions? options = null, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxContext, 1);
        options ??= new GenerationOptions();
        var context = tokenizer.Encode(prompt).ToList();
        if (context.Count == 0)
        {
            context.Add(tokenizer.EndOfTextId ?? throw new ArgumentException("an empty prompt needs a tokenizer with an end-of-text token.", nameof(prompt)));
        }

        var generated = new List<int>();
        using var generator = new Generator((ulong)options.Seed);
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            for (var step = 0; step < options.MaxNewTokens; step++)
            {
                using var scope = NewDisposeScope();
                var window = context.Skip(Math.Max(0, context.Count - maxContext)).Select(i => (long)i).ToArray();
                var ids = tensor(window, [1, window.Length], ScalarType.Int64);
                var logits = model.call(device is null ? ids : ids.to(device))[0, -1].to_type(ScalarType.Float32).cpu();
                var next = NextToken(logits, options, generator);
                if (next == tokenizer.EndOfTextId)
                {
                    break;
                }

                context.Add(next);
                generated.Add(next);
            }
        }
        finally
        {
            model.train(wasTraining);
        }

        return tokenizer.Decode(generated);
    }

    private static int NextToken(Tensor logits, GenerationOptions options, Generator generator)
    {
        if (options.TopK <= 1)
        {
            return (int)logits.argmax().item<long>();
        }

        var (values, indices) = logits.div(options.Temperature).topk((int)Math.Min(options.TopK, logits.shape[0]));
        var pick = values.softmax(0).multinomial(1, generator: generator).item<long>();
        return (int)indices[pick].item<long>();
    }
}
