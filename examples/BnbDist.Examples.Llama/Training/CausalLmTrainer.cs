using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Training;

/// <summary>What one optimizer step did.</summary>
/// <param name="Step">0-based step index.</param>
/// <param name="Loss">Mean next-token loss over the step's micro-batches (this rank).</param>
/// <param name="GradNorm">Gradient norm before clipping (as the clip function reports it).</param>
/// <param name="LearningRate">Learning rate used.</param>
/// <param name="Tokens">Tokens processed (this rank).</param>
public readonly record struct TrainStepResult(int Step, double Loss, double GradNorm, double LearningRate, long Tokens);

/// <summary>
/// One causal-LM optimizer step: learning rate from the schedule, forward/backward over the micro-batches (gradient
/// accumulation, loss divided by their number), gradient clipping, optimizer step. The model, optimizer and clip
/// function are whatever the caller passes, so the same loop drives plain AdamW on a dense model, 8-bit/paged
/// optimizers, and sharded (FullyShard) or LoRA-wrapped models.
/// </summary>
public sealed class CausalLmTrainer
{
    private readonly Module<Tensor, Tensor> model;
    private readonly optim.Optimizer optimizer;
    private readonly List<Parameter> trainable;

    /// <summary>Creates the trainer; trainable parameters are those with <c>requires_grad</c> now.</summary>
    /// <param name="model">ids [B, T] → logits [B, T, V].</param>
    /// <param name="optimizer">Any TorchSharp optimizer over the trainable parameters.</param>
    /// <param name="schedule">Learning-rate schedule.</param>
    /// <param name="maxGradNorm">Clip threshold; 0 or less disables clipping.</param>
    public CausalLmTrainer(Module<Tensor, Tensor> model, optim.Optimizer optimizer, CosineSchedule schedule, double maxGradNorm = 1.0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(schedule);
        this.model = model;
        this.optimizer = optimizer;
        Schedule = schedule;
        MaxGradNorm = maxGradNorm;
        trainable = [.. model.parameters().Where(p => p.requires_grad)];
        if (trainable.Count == 0)
        {
            throw new ArgumentException("the model has no trainable parameters.", nameof(model));
        }
    }

    /// <summary>Learning-rate schedule; may be replaced between steps (e.g. once a time budget fixes the step count).</summary>
    public CosineSchedule Schedule { get; set; }

    /// <summary>Clip threshold (0 or less: no clipping).</summary>
    public double MaxGradNorm { get; }

    /// <summary>
    /// Computes the gradient norm and clips to the threshold; returns the norm before clipping. Default: torch's
    /// <c>clip_grad_norm_</c> over the local parameters; a sharded model must replace it with one that reduces the
    /// norm across ranks.
    /// </summary>
    public Func<IReadOnlyList<Parameter>, double, double> ClipGradNorm { get; init; } =
        (ps, max) => nn.utils.clip_grad_norm_(ps, max);

    /// <summary>The next step's index (steps done so far, or where a resumed run continues).</summary>
    public int StepIndex { get; set; }

    /// <summary>Runs one optimizer step over <paramref name="microBatches"/> (ids [B, T] each).</summary>
    public TrainStepResult Step(IReadOnlyList<Tensor> microBatches)
    {
        ArgumentNullException.ThrowIfNull(microBatches);
        if (microBatches.Count == 0)
        {
            throw new ArgumentException("a step needs at least one micro-batch.", nameof(microBatches));
        }

        model.train();
        var lr = Schedule.Apply(optimizer, StepIndex);
        optimizer.zero_grad();
        double loss = 0;
        long tokens = 0;
        foreach (var batch in microBatches)
        {
            using var scope = NewDisposeScope();
            var l = CausalLm.Loss(model.call(batch), batch);
            (l / microBatches.Count).backward();
            loss += l.item<float>() / microBatches.Count;
            tokens += batch.numel();
        }

        var norm = MaxGradNorm > 0 ? ClipGradNorm(trainable, MaxGradNorm) : double.NaN;
        optimizer.step();
        return new TrainStepResult(StepIndex++, loss, norm, lr, tokens);
    }
}
