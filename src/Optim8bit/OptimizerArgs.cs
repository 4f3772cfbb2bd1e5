using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>Constructor arguments shared by the optimizer families.</summary>
internal static class OptimizerArgs
{
    /// <summary>One group of <paramref name="parameters"/> with the optimizer's defaults.</summary>
    public static IEnumerable<Optimizer8bitParamGroup> Of(IEnumerable<Parameter> parameters) =>
        [new Optimizer8bitParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters)))];

    /// <summary>The optimizer-level defaults that groups inherit.</summary>
    public static Optimizer8bitOptions Defaults(double lr, double beta1, double beta2, double eps, double weightDecay) => new()
    {
        LearningRate = lr,
        InitialLearningRate = lr,
        Beta1 = beta1,
        Beta2 = beta2,
        Eps = eps,
        WeightDecay = weightDecay,
    };

    /// <summary>
    /// SGD's momentum, after refusing what bitsandbytes' momentum kernel cannot do: momentum 0 (bitsandbytes raises too),
    /// dampening and Nesterov (bitsandbytes accepts and silently ignores them; here they are errors).
    /// </summary>
    public static double SgdMomentum(double momentum, double dampening, bool nesterov)
    {
        Require(momentum > 0, nameof(momentum), "SGD without momentum is not supported (bitsandbytes' momentum kernel needs momentum > 0).");
        Require(dampening == 0, nameof(dampening), "bitsandbytes' momentum kernel has no dampening (bitsandbytes silently ignores it); use 0.");
        Require(!nesterov, nameof(nesterov), "bitsandbytes' momentum kernel has no Nesterov variant (bitsandbytes silently runs plain momentum); use false.");
        return momentum;
    }

    /// <summary>RMSprop's α, after refusing α = 0 and centered (as bitsandbytes does) and momentum (which bitsandbytes silently ignores).</summary>
    public static double RmsPropAlpha(double alpha, double momentum, bool centered)
    {
        Require(alpha > 0, nameof(alpha), "RMSprop with alpha == 0 is not supported (as in bitsandbytes).");
        Require(momentum == 0, nameof(momentum), "bitsandbytes' RMSprop kernel has no momentum (bitsandbytes silently ignores it); use 0.");
        Require(!centered, nameof(centered), "Centered RMSprop is not supported (as in bitsandbytes).");
        return alpha;
    }

    private static void Require(bool ok, string name, string message)
    {
        if (!ok)
        {
            throw new ArgumentException(message, name);
        }
    }
}
