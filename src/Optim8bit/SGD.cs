using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>bitsandbytes' SGD: SGD with momentum (s = g at step 1, else s·momentum + g; p −= lr·s; coupled weight decay). State precision by optimBits (32 or 8).</summary>
public sealed class SGD : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public SGD(IEnumerable<Parameter> parameters, double lr, double momentum, double dampening = 0, double weightDecay = 0, bool nesterov = false, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, momentum, dampening, weightDecay, nesterov, optimBits, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public SGD(IEnumerable<Optimizer8bitParamGroup> groups, double lr, double momentum, double dampening = 0, double weightDecay = 0, bool nesterov = false, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Momentum, OptimizerArgs.Defaults(lr, OptimizerArgs.SgdMomentum(momentum, dampening, nesterov), 0, 0, weightDecay), optimBits, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' SGD8bit: SGD with momentum (s = g at step 1, else s·momentum + g; p −= lr·s; coupled weight decay). 8-bit blockwise state.</summary>
public sealed class SGD8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public SGD8bit(IEnumerable<Parameter> parameters, double lr, double momentum, double dampening = 0, double weightDecay = 0, bool nesterov = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, momentum, dampening, weightDecay, nesterov, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public SGD8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr, double momentum, double dampening = 0, double weightDecay = 0, bool nesterov = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Momentum, OptimizerArgs.Defaults(lr, OptimizerArgs.SgdMomentum(momentum, dampening, nesterov), 0, 0, weightDecay), 8, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' SGD32bit: SGD with momentum (s = g at step 1, else s·momentum + g; p −= lr·s; coupled weight decay). f32 state.</summary>
public sealed class SGD32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public SGD32bit(IEnumerable<Parameter> parameters, double lr, double momentum, double dampening = 0, double weightDecay = 0, bool nesterov = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, momentum, dampening, weightDecay, nesterov, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public SGD32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr, double momentum, double dampening = 0, double weightDecay = 0, bool nesterov = false, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Momentum, OptimizerArgs.Defaults(lr, OptimizerArgs.SgdMomentum(momentum, dampening, nesterov), 0, 0, weightDecay), 32, minBlockwise8bitSize, null, manager)
    {
    }
}
