using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Optimizers;

/// <summary>
/// A small real model — a 2-layer MLP (16 → 256 → 16, so both weight matrices get 8-bit state) regressing a fixed random
/// teacher network plus noise — trained full-batch from the same seed with each 8-bit optimizer and its 32-bit
/// counterpart, with TorchSharp's cosine learning-rate schedule: the final held-out loss of the 8-bit run is within
/// 1 % of the 32-bit run's. The class runs alone with one libtorch thread: these are many tiny ops, and libtorch's
/// spinning OpenMP workers slow them twentyfold on a loaded two-core machine.
/// </summary>
[Collection(nameof(SingleThreadedTorch))]
public class ConvergenceTests
{
    private const int Steps = 300;

    /// <summary>
    /// Lion runs at a high lr so that both runs reach the floor within the step budget: at lr 1e-4 the 8-bit run is
    /// still 12 % behind after 300 steps (measured; bitsandbytes' Lion8bit, whose trajectory ours reproduces bit for
    /// bit, converges more slowly there), at 3e-3 the two end within 0.3 %.
    /// </summary>
    private const double LionLr = 3e-3;

    [Theory]
    [InlineData("Adam8bit", "Adam32bit")]
    [InlineData("AdamW8bit", "AdamW32bit")]
    [InlineData("SGD8bit", "SGD32bit")]
    [InlineData("Lion8bit", "Lion32bit")]
    [InlineData("RMSprop8bit", "RMSprop32bit")]
    [InlineData("PagedAdamW8bit", "PagedAdamW32bit")]
    public void EightBitTrainingEndsWithinOnePercentOfThirtyTwoBit(string eightBit, string thirtyTwoBit)
    {
        var threads = get_num_threads();
        set_num_threads(1);
        double loss8, loss32;
        try
        {
            loss8 = Train(eightBit);
            loss32 = Train(thirtyTwoBit);
        }
        finally
        {
            set_num_threads(threads);
        }

        Assert.True(double.IsFinite(loss8) && double.IsFinite(loss32));
        Assert.True(loss32 < 0.2 * InitialLoss(), $"the 32-bit run did not learn: {loss32} vs initial {InitialLoss()}");
        Assert.True(Math.Abs(loss8 - loss32) <= 0.01 * loss32, $"{eightBit} {loss8:F5} vs {thirtyTwoBit} {loss32:F5}");
    }

    private static double Train(string optimizer)
    {
        using var scope = NewDisposeScope();
        var (x, y, xTest, yTest) = Data();
        var model = Student();
        var ps = model.parameters().ToList();
        using var opt = Create(optimizer, ps);
        var schedule = optim.lr_scheduler.CosineAnnealingLR(opt, Steps);
        for (var s = 0; s < Steps; s++)
        {
            using var stepScope = NewDisposeScope();
            opt.zero_grad();
            nn.functional.mse_loss(model.call(x), y).backward();
            opt.step();
            schedule.step();
        }

        using (no_grad())
        {
            return nn.functional.mse_loss(model.call(xTest), yTest).item<float>();
        }
    }

    private static double InitialLoss()
    {
        using var scope = NewDisposeScope();
        var (_, _, xTest, yTest) = Data();
        using (no_grad())
        {
            return nn.functional.mse_loss(Student().call(xTest), yTest).item<float>();
        }
    }

    private static Optimizer8bit Create(string name, List<Parameter> ps) => name switch
    {
        "SGD8bit" => new SGD8bit(ps, lr: 0.05, momentum: 0.9, manager: new()),
        "SGD32bit" => new SGD32bit(ps, lr: 0.05, momentum: 0.9, manager: new()),
        "Lion8bit" => new Lion8bit(ps, lr: LionLr, manager: new()),
        "Lion32bit" => new Lion32bit(ps, lr: LionLr, manager: new()),
        "RMSprop8bit" => new RMSprop8bit(ps, lr: 1e-3, manager: new()),
        "RMSprop32bit" => new RMSprop32bit(ps, lr: 1e-3, manager: new()),
        "PagedAdamW8bit" => new PagedAdamW8bit(ps, paging: new PagingOptions(PageElements: 4096), manager: new()),
        "PagedAdamW32bit" => new PagedAdamW32bit(ps, paging: new PagingOptions(PageElements: 4096), manager: new()),
        _ => TrainingRun.Create(name, ps),
    };

    private static Sequential Student()
    {
        manual_seed(2);
        return nn.Sequential(nn.Linear(16, 256), nn.Tanh(), nn.Linear(256, 16));
    }

    private static (Tensor X, Tensor Y, Tensor XTest, Tensor YTest) Data()
    {
        manual_seed(1);
        var teacher = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 16));
        using (no_grad())
        {
            var x = randn(2048, 16);
            var xTest = randn(2048, 16);
            var y = teacher.call(x) + (randn(2048, 16) * 0.1f);
            var yTest = teacher.call(xTest) + (randn(2048, 16) * 0.1f);
            return (x, y, xTest, yTest);
        }
    }
}

/// <summary>Tests that change libtorch's process-wide thread count run alone.</summary>
[CollectionDefinition(nameof(SingleThreadedTorch), DisableParallelization = true)]
public sealed class SingleThreadedTorch;
