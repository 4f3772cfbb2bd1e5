using BnbDist.Optim8bit.Config;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Optimizers;

/// <summary>
/// A fixed set of parameters (sizes chosen to hit 8-bit state, 32-bit state below min_8bit_size, partial last blocks)
/// and fixed gradients per step, to run optimizers side by side and compare every byte they write.
/// </summary>
internal sealed class TrainingRun : IDisposable
{
    /// <summary>20,000 (several 4096-element pages, partial last block), 3,000 (32-bit state), 5,000 (8-bit, crosses a page).</summary>
    public static readonly long[] DefaultSizes = [20_000, 3_000, 5_000];

    private readonly Tensor[] initial;

    public TrainingRun(long[]? sizes = null, ScalarType dtype = ScalarType.Float32, int seed = 5)
    {
        var gen = new TorchSharp.torch.Generator((ulong)seed);
        initial = [.. (sizes ?? DefaultSizes).Select(n => randn(n, generator: gen).mul(0.1f).to(dtype))];
        Gradients = [.. Enumerable.Range(0, 8).Select(_ => initial.Select(p => randn(p.numel(), generator: gen).mul(0.01f).to(dtype)).ToArray())];
        Params = NewParams();
    }

    public Parameter[] Params { get; }

    /// <summary>Gradients of step s (0-based, cycling) for each parameter.</summary>
    public Tensor[][] Gradients { get; }

    /// <summary>Fresh parameters with the initial values.</summary>
    public Parameter[] NewParams() => [.. initial.Select(TestGrads.Param)];

    /// <summary>Runs steps [from, to) of <paramref name="opt"/> over <paramref name="ps"/>.</summary>
    public void Steps(Optimizer8bit opt, Parameter[] ps, int from, int to)
    {
        for (var s = from; s < to; s++)
        {
            for (var i = 0; i < ps.Length; i++)
            {
                TestGrads.Set(ps[i], Gradients[s % Gradients.Length][i]);
            }

            opt.step();
        }
    }

    /// <summary>Every byte of parameters and states.</summary>
    public static byte[][] Bytes(Optimizer8bit opt, Parameter[] ps) =>
        [.. ps.Select(p => Backends.StepFixture.Bytes(p.detach())),
            .. opt.States.SelectMany(s => new[] { s.State1, s.State2, s.Absmax1, s.Absmax2 }).Where(t => t is not null).Select(t => Backends.StepFixture.Bytes(t!))];

    public void Dispose()
    {
        foreach (var t in initial.Concat(Gradients.SelectMany(g => g)).Concat(Params))
        {
            t.Dispose();
        }
    }

    /// <summary>An optimizer of the named class on <paramref name="ps"/> (a fresh manager unless one is given).</summary>
    public static Optimizer8bit Create(string name, IEnumerable<Parameter> ps, PagingOptions? paging = null, GlobalOptimManager? manager = null)
    {
        manager ??= new GlobalOptimManager();
        return name switch
        {
            "AdamW8bit" => new AdamW8bit(ps, manager: manager),
            "AdamW32bit" => new AdamW32bit(ps, manager: manager),
            "Adam8bit" => new Adam8bit(ps, manager: manager),
            "Adam32bit" => new Adam32bit(ps, manager: manager),
            "Lion8bit" => new Lion8bit(ps, lr: 1e-3, weightDecay: 0.01, manager: manager),
            "Lion32bit" => new Lion32bit(ps, lr: 1e-3, weightDecay: 0.01, manager: manager),
            "SGD8bit" => new SGD8bit(ps, lr: 0.05, momentum: 0.9, weightDecay: 1e-4, manager: manager),
            "SGD32bit" => new SGD32bit(ps, lr: 0.05, momentum: 0.9, weightDecay: 1e-4, manager: manager),
            "RMSprop8bit" => new RMSprop8bit(ps, lr: 1e-3, weightDecay: 1e-4, manager: manager),
            "RMSprop32bit" => new RMSprop32bit(ps, lr: 1e-3, weightDecay: 1e-4, manager: manager),
            "PagedAdamW8bit" => new PagedAdamW8bit(ps, paging: paging, manager: manager),
            "PagedAdamW32bit" => new PagedAdamW32bit(ps, paging: paging, manager: manager),
            "PagedAdamW" => new PagedAdamW(ps, paging: paging, manager: manager),
            "PagedLion8bit" => new PagedLion8bit(ps, lr: 1e-3, weightDecay: 0.01, paging: paging, manager: manager),
            "PagedLion32bit" => new PagedLion32bit(ps, lr: 1e-3, weightDecay: 0.01, paging: paging, manager: manager),
            _ => throw new ArgumentException(name, nameof(name)),
        };
    }
}
