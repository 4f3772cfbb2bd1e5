using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Training;

/// <summary>The causal language-modelling objective: predict token t+1 from tokens ≤ t.</summary>
public static class CausalLm
{
    /// <summary>Mean cross-entropy (fp32) of logits [B, T, V] against the next tokens of ids [B, T] (B·(T-1) predictions).</summary>
    public static Tensor Loss(Tensor logits, Tensor ids) => ShiftedCrossEntropy(logits, ids, Reduction.Mean);

    /// <summary>Summed cross-entropy over the B·(T-1) predictions (for exact averages across batches and ranks).</summary>
    public static Tensor SummedLoss(Tensor logits, Tensor ids) => ShiftedCrossEntropy(logits, ids, Reduction.Sum);

    /// <summary>Number of predictions (B·(T-1)) in a batch of ids [B, T].</summary>
    public static long Predictions(Tensor ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return ids.shape[0] * (ids.shape[1] - 1);
    }

    private static Tensor ShiftedCrossEntropy(Tensor logits, Tensor ids, Reduction reduction)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(ids);
        if (logits.dim() != 3 || ids.dim() != 2 || logits.shape[0] != ids.shape[0] || logits.shape[1] != ids.shape[1])
        {
            throw new ArgumentException($"logits [{string.Join(", ", logits.shape)}] do not match ids [{string.Join(", ", ids.shape)}] as [B, T, V] and [B, T].", nameof(logits));
        }

        using var scope = NewDisposeScope();
        var t = ids.shape[1];
        var predicted = logits.narrow(1, 0, t - 1).reshape(-1, logits.shape[2]).to_type(ScalarType.Float32);
        var targets = ids.narrow(1, 1, t - 1).reshape(-1);
        return functional.cross_entropy(predicted, targets, reduction: reduction).MoveToOuterDisposeScope();
    }
}
