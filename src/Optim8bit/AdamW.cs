using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>bitsandbytes' AdamW: AdamW (the Adam kernel; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2). State precision by optimBits (32 or 8).</summary>
public sealed class AdamW : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public AdamW(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, optimBits, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public AdamW(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), optimBits, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' AdamW8bit: AdamW (the Adam kernel; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2). 8-bit blockwise states.</summary>
public sealed class AdamW8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public AdamW8bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public AdamW8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 8, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' AdamW32bit: AdamW (the Adam kernel; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2). f32 states.</summary>
public sealed class AdamW32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public AdamW32bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public AdamW32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 32, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' PagedAdamW: AdamW (the Adam kernel; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2). States in host memory, staged to the device per page (<see cref="PagingOptions"/>); precision by optimBits.</summary>
public sealed class PagedAdamW : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedAdamW(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int optimBits = 32, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, optimBits, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedAdamW(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int optimBits = 32, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), optimBits, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}

/// <summary>bitsandbytes' PagedAdamW8bit: AdamW (the Adam kernel; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2). 8-bit blockwise states in host memory, staged to the device per page.</summary>
public sealed class PagedAdamW8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedAdamW8bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedAdamW8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 8, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}

/// <summary>bitsandbytes' PagedAdamW32bit: AdamW (the Adam kernel; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2). f32 states in host memory, staged to the device per page.</summary>
public sealed class PagedAdamW32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedAdamW32bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedAdamW32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 1e-2, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 32, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}
