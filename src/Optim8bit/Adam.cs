using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using TorchSharp.Modules;

namespace BnbDist.Optim8bit;

/// <summary>bitsandbytes' Adam: Adam (weight decay decoupled and applied after the step, as bitsandbytes' kernel does; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0). State precision by optimBits (32 or 8).</summary>
public sealed class Adam : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public Adam(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, optimBits, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public Adam(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), optimBits, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' Adam8bit: Adam (weight decay decoupled and applied after the step, as bitsandbytes' kernel does; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0). 8-bit blockwise states.</summary>
public sealed class Adam8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public Adam8bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public Adam8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 8, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' Adam32bit: Adam (weight decay decoupled and applied after the step, as bitsandbytes' kernel does; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0). f32 states.</summary>
public sealed class Adam32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public Adam32bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public Adam32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 32, minBlockwise8bitSize, null, manager)
    {
    }
}

/// <summary>bitsandbytes' PagedAdam: Adam (weight decay decoupled and applied after the step, as bitsandbytes' kernel does; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0). States in host memory, staged to the device per page (<see cref="PagingOptions"/>); precision by optimBits.</summary>
public sealed class PagedAdam : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedAdam(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, optimBits, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedAdam(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int optimBits = 32, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), optimBits, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}

/// <summary>bitsandbytes' PagedAdam8bit: Adam (weight decay decoupled and applied after the step, as bitsandbytes' kernel does; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0). 8-bit blockwise states in host memory, staged to the device per page.</summary>
public sealed class PagedAdam8bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedAdam8bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedAdam8bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 8, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}

/// <summary>bitsandbytes' PagedAdam32bit: Adam (weight decay decoupled and applied after the step, as bitsandbytes' kernel does; defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0). f32 states in host memory, staged to the device per page.</summary>
public sealed class PagedAdam32bit : Optimizer8bit
{
    /// <summary>One group of <paramref name="parameters"/>.</summary>
    public PagedAdam32bit(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : this(OptimizerArgs.Of(parameters), lr, beta1, beta2, eps, weightDecay, minBlockwise8bitSize, paging, manager)
    {
    }

    /// <summary>Several groups; their null options take these values.</summary>
    public PagedAdam32bit(IEnumerable<Optimizer8bitParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int minBlockwise8bitSize = 4096, PagingOptions? paging = null, GlobalOptimManager? manager = null)
        : base(groups, UpdateRule.Adam, OptimizerArgs.Defaults(lr, beta1, beta2, eps, weightDecay), 32, minBlockwise8bitSize, paging ?? new PagingOptions(), manager)
    {
    }
}
