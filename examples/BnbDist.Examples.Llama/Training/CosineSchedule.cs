using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Training;

/// <summary>
/// Linear warm-up to the peak learning rate, then cosine decay to <c>peak · minRatio</c> at <see cref="TotalSteps"/>
/// (Hugging Face's <c>get_cosine_schedule_with_warmup</c> with a floor). A closed form of the step, so resuming
/// needs only the step number.
/// </summary>
public sealed record CosineSchedule
{
    /// <summary>Creates the schedule.</summary>
    public CosineSchedule(double peakLearningRate, int warmupSteps, int totalSteps, double minRatio = 0.1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(peakLearningRate);
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        ArgumentOutOfRangeException.ThrowIfLessThan(totalSteps, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(minRatio);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minRatio, 1.0);
        PeakLearningRate = peakLearningRate;
        WarmupSteps = warmupSteps;
        TotalSteps = totalSteps;
        MinRatio = minRatio;
    }

    /// <summary>Learning rate at the end of warm-up.</summary>
    public double PeakLearningRate { get; }

    /// <summary>Steps of linear warm-up.</summary>
    public int WarmupSteps { get; }

    /// <summary>Step at which the decay reaches its floor.</summary>
    public int TotalSteps { get; }

    /// <summary>Floor as a fraction of the peak.</summary>
    public double MinRatio { get; }

    /// <summary>Learning rate for 0-based <paramref name="step"/>.</summary>
    public double LearningRate(int step)
    {
        if (step < WarmupSteps)
        {
            return PeakLearningRate * (step + 1) / WarmupSteps;
        }

        var progress = Math.Clamp((double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps), 0, 1);
        return PeakLearningRate * (MinRatio + ((1 - MinRatio) * 0.5 * (1 + Math.Cos(Math.PI * progress))));
    }

    /// <summary>Sets every parameter group of <paramref name="optimizer"/> to the rate of <paramref name="step"/>; returns it.</summary>
    public double Apply(optim.Optimizer optimizer, int step)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        var lr = LearningRate(step);
        foreach (var group in optimizer.ParamGroups)
        {
            group.LearningRate = lr;
        }

        return lr;
    }
}
