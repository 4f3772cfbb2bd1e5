using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Tests.Kernels;
using BnbDist.Tests;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Optimizers;

/// <summary>
/// Every golden <c>opt.*</c> run of bitsandbytes replayed through the optimizer classes (not the kernels): its two
/// parameters (p_big, 4356 elements: 8-bit state; p_small, 100: 32-bit state) in one group, its recorded gradients,
/// 12 steps; the kernel tests' bounds apply.
/// </summary>
public class GoldenClassReplayTests
{
    public static TheoryData<string> Names => ["Adam8bit", "AdamW8bit", "Adam32", "SGD8bit", "Lion8bit", "RMSprop8bit", "PagedAdamW8bit"];

    [Theory]
    [MemberData(nameof(Names))]
    public void ClassReplaysBitsandbytesTrajectory(string name)
    {
        using var big = TestGrads.Param(Golden.Get($"opt.{name}.p_big.init"));
        using var small = TestGrads.Param(Golden.Get($"opt.{name}.p_small.init"));
        using var opt = Create(name, [big, small]);
        for (var step = 1; step <= 12; step++)
        {
            TestGrads.Set(big, Golden.Get($"opt.{name}.grad_big.{step - 1}"));
            TestGrads.Set(small, Golden.Get($"opt.{name}.grad_small.{step - 1}"));
            opt.step();

            var relBig = Trajectory.RelativeL2(TestGrads.Floats(big), TestGrads.Floats(Golden.Get($"opt.{name}.p_big.{step - 1}")));
            Assert.True(relBig < 1e-5, $"p_big step {step}: ||dp||/||p|| = {relBig:E2}");
            var expectedSmall = TestGrads.Floats(Golden.Get($"opt.{name}.p_small.{step - 1}"));
            if (name is "SGD8bit" or "Lion8bit")
            {
                Assert.Equal(expectedSmall, TestGrads.Floats(small)); // the 32-bit SGD and Lion steps are bit-exact
            }
            else
            {
                var relSmall = Trajectory.RelativeL2(TestGrads.Floats(small), expectedSmall);
                Assert.True(relSmall < 2e-6, $"p_small step {step}: ||dp||/||p|| = {relSmall:E2}");
            }
        }

        var state = opt.StateOf(big);
        Assert.Equal(12, state.Step);
        Assert.False(opt.StateOf(small).Is8bit); // 100 < min_8bit_size
        if (name == "Adam32")
        {
            Assert.False(state.Is8bit);
            AssertClose(state.State1!, $"opt.{name}.final_state_big.state1");
            AssertClose(state.State2!, $"opt.{name}.final_state_big.state2");
            return;
        }

        Assert.True(state.Is8bit);
        AssertBytes(state.State1!, $"opt.{name}.final_state_big.state1", exact: name.Contains("Adam", StringComparison.Ordinal));
        AssertAbsmax(state.Absmax1!, $"opt.{name}.final_state_big.absmax1");
        Assert.Equal(TestGrads.Floats(Golden.Get($"opt.{name}.final_state_big.qmap1")), TestGrads.Floats(state.Qmap1!));
        if (state.State2 is not null)
        {
            AssertBytes(state.State2, $"opt.{name}.final_state_big.state2", exact: true);
            AssertAbsmax(state.Absmax2!, $"opt.{name}.final_state_big.absmax2");
            Assert.Equal(TestGrads.Floats(Golden.Get($"opt.{name}.final_state_big.qmap2")), TestGrads.Floats(state.Qmap2!));
        }
    }

    /// <summary>The optimizer bitsandbytes ran for each golden name, with the README's hyperparameters.</summary>
    internal static Optimizer8bit Create(string name, IEnumerable<Parameter> ps, GlobalOptimManager? manager = null, PagingOptions? paging = null)
    {
        manager ??= new GlobalOptimManager();
        return name switch
        {
            "Adam8bit" => new Adam8bit(ps, manager: manager),
            "AdamW8bit" => new AdamW8bit(ps, manager: manager),
            "Adam32" => new Adam32bit(ps, manager: manager),
            "SGD8bit" => new SGD8bit(ps, lr: 1e-2, momentum: 0.9, manager: manager),
            "Lion8bit" => new Lion8bit(ps, lr: 1e-4, weightDecay: 0.01, manager: manager),
            "RMSprop8bit" => new RMSprop8bit(ps, lr: 1e-3, manager: manager), // the golden run used lr 1e-3 (its README)
            "PagedAdamW8bit" => new PagedAdamW8bit(ps, manager: manager, paging: paging),
            _ => throw new ArgumentException(name, nameof(name)),
        };
    }

    private static void AssertBytes(Tensor actual, string golden, bool exact)
    {
        var a = actual.cpu().data<byte>().ToArray();
        var e = Golden.Get(golden).data<byte>().ToArray();
        var same = a.Zip(e).Count(z => z.First == z.Second);
        if (exact)
        {
            Assert.Equal(e, a);
        }
        else
        {
            Assert.True(same >= 0.999 * e.Length, $"{e.Length - same} of {e.Length} state bytes differ");
        }
    }

    private static void AssertAbsmax(Tensor actual, string golden)
    {
        var a = TestGrads.Floats(actual);
        var e = TestGrads.Floats(Golden.Get(golden));
        Assert.Equal(e.Length, a.Length);
        for (var b = 0; b < e.Length; b++)
        {
            Assert.True(Math.Abs(a[b] - e[b]) <= 1e-6 * e[b], $"{golden}[{b}]: {a[b]} vs {e[b]}");
        }
    }

    private static void AssertClose(Tensor actual, string golden)
    {
        var a = TestGrads.Floats(actual);
        var e = TestGrads.Floats(Golden.Get(golden));
        for (var i = 0; i < e.Length; i++)
        {
            Assert.True(Math.Abs(a[i] - e[i]) <= (1e-6 * Math.Abs(e[i])) + 1e-12, $"{golden}[{i}]: {a[i]} vs {e[i]}");
        }
    }
}
