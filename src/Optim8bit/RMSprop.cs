using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>bitsandbytes' RMSprop: RMSprop (s = s·α + (1−α)·g²; p −= lr·g/(√s + ε); coupled weight decay; defaults lr 1e-2, alpha 0.99, eps 1e-8). State precision by optimBits (32 or 8).</summary>
public sealed class RMSprop : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public RMSprop(IEnumerable<Parameter> parameters, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, alpha, eps, weightDecay, momentum, centered, optimBits, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public RMSprop(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.RmsProp, OptimizerArgs.Defaults(lr, OptimizerArgs.RmsPropAlpha(alpha, momentum, centered), 0, eps, weightDecay), optimBits, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' RMSprop8bit: RMSprop (s = s·α + (1−α)·g²; p −= lr·g/(√s + ε); coupled weight decay; defaults lr 1e-2, alpha 0.99, eps 1e-8). 8-bit blockwise state.</summary>
public sealed class RMSprop8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public RMSprop8bit(IEnumerable<Parameter> parameters, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, alpha, eps, weightDecay, momentum, centered, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public RMSprop8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.RmsProp, OptimizerArgs.Defaults(lr, OptimizerArgs.RmsPropAlpha(alpha, momentum, centered), 0, eps, weightDecay), 8, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' RMSprop32bit: RMSprop (s = s·α + (1−α)·g²; p −= lr·g/(√s + ε); coupled weight decay; defaults lr 1e-2, alpha 0.99, eps 1e-8). f32 state.</summary>
public sealed class RMSprop32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public RMSprop32bit(IEnumerable<Parameter> parameters, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, alpha, eps, weightDecay, momentum, centered, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public RMSprop32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weightDecay = 0, double momentum = 0, bool centered = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.RmsProp, OptimizerArgs.Defaults(lr, OptimizerArgs.RmsPropAlpha(alpha, momentum, centered), 0, eps, weightDecay), 32, minBlockwise8bitSize, null, manager)
    {
    }
}
