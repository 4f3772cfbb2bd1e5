using System.Text.Json;
using BnbDist.Collectives;
using BnbDist.Examples.Llama.Training;
using BnbDist.Nn.Surgery;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Examples.QLoRA;

/// <summary>
/// Re-applies a saved LoRA adapter to the quantized base model (no sharding, no training) and measures the held-out
/// loss on the same sequences the job evaluates: the check that the adapter file alone reproduces the fine-tuned model.
/// </summary>
internal static class AdapterEvaluation
{
    public static double Run(QLoraOptions options, string adapter, ICommunicator comm)
    {
        var device = cuda.is_available() ? new Device(DeviceType.CUDA, 0) : CPU;
        var (model, _, _, _, heldOut) = QLoraJob.Prepare(options, comm.Rank, comm.WorldSize, device,
            device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32);
        QLoraJob.AddAdapters(model, new LoraConfig { R = options.LoraRank, Alpha = options.LoraAlpha, TargetModules = [.. QLoraJob.LoraTargets] }, options.Seed);
        ModelSurgery.LoadAdapter(model, adapter);
        var sum = Perplexity.Evaluate(model, heldOut, options.MicroBatch, device);
        using var t = tensor(new[] { sum.NllSum, sum.Predictions }, ScalarType.Float64).to(device);
        comm.AllReduce(t, Collectives.ReduceOp.Sum);
        var v = t.cpu().data<double>().ToArray();
        var loss = v[0] / v[1];
        if (comm.Rank == 0)
        {
            File.WriteAllText(Path.Combine(adapter, "eval.json"), JsonSerializer.Serialize(new { held_out_loss = loss, perplexity = Math.Exp(loss) }));
        }

        return loss;
    }
}
