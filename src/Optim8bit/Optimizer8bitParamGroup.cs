using TorchSharp.Modules;
using static TorchSharp.torch.optim;

namespace BnbDist.Optim8bit;

/// <summary>
/// A parameter group with its own hyperparameters (null: the optimizer's). Learning-rate schedulers drive
/// <see cref="ParamGroup.LearningRate"/>; momentum-cycling schedulers drive <see cref="Betas"/> / <see cref="Momentum"/>.
/// </summary>
public sealed class Optimizer8bitParamGroup : ParamGroup<Optimizer8bitOptions>, IBetas, IMomentum
{
    /// <summary>A group of <paramref name="parameters"/> (materialized now: TorchSharp enumerables are lazy).</summary>
    public Optimizer8bitParamGroup(IEnumerable<Parameter> parameters, double? lr = null, double? beta1 = null, double? beta2 = null,
        double? eps = null, double? weightDecay = null)
        : base((parameters ?? throw new ArgumentNullException(nameof(parameters))).ToList(),
            new Optimizer8bitOptions { LearningRate = lr, Beta1 = beta1, Beta2 = beta2, Eps = eps, WeightDecay = weightDecay })
    {
    }

    /// <summary>(β1, β2).</summary>
    public (double, double) Betas
    {
        get => (Options.Beta1 ?? 0, Options.Beta2 ?? 0);
        set => (Options.Beta1, Options.Beta2) = value;
    }

    /// <summary>β1 under its SGD name.</summary>
    public double Momentum
    {
        get => Options.Beta1 ?? 0;
        set => Options.Beta1 = value;
    }
}
