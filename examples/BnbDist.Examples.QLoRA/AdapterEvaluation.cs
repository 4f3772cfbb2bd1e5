using System.Text.Json;
using BnbDist.Collectives;
using BnbDist.Nn.Surgery;

namespace BnbDist.Examples.QLoRA;

/// <summary>
/// Re-applies a saved LoRA adapter to the quantized base model (no sharding, no training) and measures the held-out
/// loss on the same sequences the job evaluates: the check that the adapter file alone reproduces the fine-tuned model.
/// </summary>
internal static class AdapterEvaluation
{
    public static double Run(QLoraOptions options, string adapter, ICommunicator comm)
    {
        var device = QLoraJob.LocalDevice();
        var (model, _, _, _, heldOut) = QLoraJob.Prepare(options, comm.Rank, comm.WorldSize, device, QLoraJob.ComputeDTypeFor(device));
        QLoraJob.AddAdapters(model, new LoraConfig { R = options.LoraRank, Alpha = options.LoraAlpha, TargetModules = [.. QLoraJob.LoraTargets] }, options.Seed);
        ModelSurgery.LoadAdapter(model, adapter);
        var loss = QLoraJob.HeldOutLoss(model, heldOut, options.MicroBatch, device, comm);
        if (comm.Rank == 0)
        {
            File.WriteAllText(Path.Combine(adapter, "eval.json"), JsonSerializer.Serialize(new { held_out_loss = loss, perplexity = Math.Exp(loss) }));
        }

        return loss;
    }
}
