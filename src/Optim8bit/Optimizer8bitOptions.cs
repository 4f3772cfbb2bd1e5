using BnbDist.Optim8bit.State;
using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>
/// The hyperparameters of one parameter group (bitsandbytes' group keys lr, betas, eps, weight_decay). Null means
/// "the optimizer's default" until the group is added, when the defaults are filled in.
/// </summary>
public sealed class Optimizer8bitOptions : OptimizerOptions
{
    /// <summary>β1 (Adam, Lion), momentum (SGD) or α (RMSprop).</summary>
    public double? Beta1 { get; set; }

    /// <summary>β2 (Adam, Lion); 0 for SGD and RMSprop.</summary>
    public double? Beta2 { get; set; }

    /// <summary>ε (Adam, RMSprop); 0 where unused.</summary>
    public double? Eps { get; set; }

    /// <summary>Weight decay: decoupled for Adam/AdamW and Lion, coupled (added to the gradient) for SGD and RMSprop.</summary>
    public double? WeightDecay { get; set; }

    /// <inheritdoc/>
    public override void SaveStateDict(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        base.SaveStateDict(writer);
        writer.Write(Beta1 ?? double.NaN);
        writer.Write(Beta2 ?? double.NaN);
        writer.Write(Eps ?? double.NaN);
        writer.Write(WeightDecay ?? double.NaN);
    }

    /// <inheritdoc/>
    public override void LoadStateDict(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        base.LoadStateDict(reader);
        Beta1 = reader.ReadDouble();
        Beta2 = reader.ReadDouble();
        Eps = reader.ReadDouble();
        WeightDecay = reader.ReadDouble();
    }

    /// <inheritdoc/>
    public override void LoadStateDict(OptimizerOptions source)
    {
        if (source is not Optimizer8bitOptions o)
        {
            throw new OptimizerStateMismatchException(null, "param_groups",
                $"the group options are {source?.GetType().Name ?? "null"}, not Optimizer8bitOptions (state of another optimizer type).");
        }

        base.LoadStateDict(source);
        Beta1 = o.Beta1;
        Beta2 = o.Beta2;
        Eps = o.Eps;
        WeightDecay = o.WeightDecay;
    }

    /// <summary>A copy with the null fields taken from <paramref name="defaults"/>.</summary>
    internal Optimizer8bitOptions WithDefaults(Optimizer8bitOptions defaults) => new()
    {
        LearningRate = LearningRate ?? defaults.LearningRate,
        InitialLearningRate = LearningRate ?? defaults.LearningRate ?? 0,
        Beta1 = Beta1 ?? defaults.Beta1,
        Beta2 = Beta2 ?? defaults.Beta2,
        Eps = Eps ?? defaults.Eps,
        WeightDecay = WeightDecay ?? defaults.WeightDecay,
    };
}
