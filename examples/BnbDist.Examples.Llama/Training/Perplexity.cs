using BnbDist.Examples.Llama.Data;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Training;

/// <summary>Summed next-token loss over some data; sums (not means) so ranks' parts add up exactly.</summary>
/// <param name="NllSum">Σ −log p(next token), nats.</param>
/// <param name="Predictions">Number of predicted tokens.</param>
public readonly record struct LossSum(double NllSum, long Predictions)
{
    /// <summary>Mean loss per token (nats).</summary>
    public double MeanLoss => Predictions > 0 ? NllSum / Predictions : double.NaN;

    /// <summary>exp(mean loss).</summary>
    public double Perplexity => Math.Exp(MeanLoss);

    /// <summary>Adds two parts (e.g. after gathering ranks' sums).</summary>
    public static LossSum operator +(LossSum a, LossSum b) => new(a.NllSum + b.NllSum, a.Predictions + b.Predictions);

    /// <summary>Same as <c>+</c>.</summary>
    public static LossSum Add(LossSum a, LossSum b) => a + b;
}

/// <summary>Held-out evaluation of a causal LM.</summary>
public static class Perplexity
{
    /// <summary>
    /// Summed next-token loss of <paramref name="model"/> (ids → logits) over <paramref name="data"/>, in eval mode
    /// without gradients (the model's training mode is restored). For several ranks, evaluate each rank's shard and
    /// all-reduce <see cref="LossSum.NllSum"/> and <see cref="LossSum.Predictions"/>.
    /// </summary>
    public static LossSum Evaluate(Module<Tensor, Tensor> model, PackedDataset data, int batchSize, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            var total = new LossSum(0, 0);
            foreach (var batch in data.Batches(batchSize, device, dropLast: false))
            {
                using var owned = batch;
                using var scope = NewDisposeScope();
                var nll = CausalLm.SummedLoss(model.call(batch), batch).to_type(ScalarType.Float64).item<double>();
                total += new LossSum(nll, CausalLm.Predictions(batch));
            }

            return total;
        }
        finally
        {
            model.train(wasTraining);
        }
    }
}
