using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>bitsandbytes' Lion: Lion (sign of the interpolated momentum, decoupled weight decay; defaults lr 1e-4, betas (0.9, 0.99), weight decay 0). State precision by optimBits (32 or 8).</summary>
public sealed class Lion : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public Lion(IEnumerable<Parameter> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, weightDecay, optimBits, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public Lion(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Lion, OptimizerArgs.Defaults(lr, beta1, beta2, 0, weightDecay), optimBits, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' Lion8bit: Lion (sign of the interpolated momentum, decoupled weight decay; defaults lr 1e-4, betas (0.9, 0.99), weight decay 0). 8-bit blockwise state.</summary>
public sealed class Lion8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public Lion8bit(IEnumerable<Parameter> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, weightDecay, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public Lion8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Lion, OptimizerArgs.Defaults(lr, beta1, beta2, 0, weightDecay), 8, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' Lion32bit: Lion (sign of the interpolated momentum, decoupled weight decay; defaults lr 1e-4, betas (0.9, 0.99), weight decay 0). f32 state.</summary>
public sealed class Lion32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public Lion32bit(IEnumerable<Parameter> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, weightDecay, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public Lion32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Lion, OptimizerArgs.Defaults(lr, beta1, beta2, 0, weightDecay), 32, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' PagedLion: Lion (sign of the interpolated momentum, decoupled weight decay; defaults lr 1e-4, betas (0.9, 0.99), weight decay 0). State in host memory, staged to the device per page; precision by optimBits.</summary>
public sealed class PagedLion : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedLion(IEnumerable<Parameter> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, weightDecay, optimBits, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedLion(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Lion, OptimizerArgs.Defaults(lr, beta1, beta2, 0, weightDecay), optimBits, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}

/// <summary>bitsandbytes' PagedLion8bit: Lion (sign of the interpolated momentum, decoupled weight decay; defaults lr 1e-4, betas (0.9, 0.99), weight decay 0). 8-bit blockwise state in host memory, staged to the device per page.</summary>
public sealed class PagedLion8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedLion8bit(IEnumerable<Parameter> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, weightDecay, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedLion8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Lion, OptimizerArgs.Defaults(lr, beta1, beta2, 0, weightDecay), 8, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}

/// <summary>bitsandbytes' PagedLion32bit: Lion (sign of the interpolated momentum, decoupled weight decay; defaults lr 1e-4, betas (0.9, 0.99), weight decay 0). f32 state in host memory, staged to the device per page.</summary>
public sealed class PagedLion32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedLion32bit(IEnumerable<Parameter> parameters, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, weightDecay, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedLion32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-4, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Lion, OptimizerArgs.Defaults(lr, beta1, beta2, 0, weightDecay), 32, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}
