using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Kernels;
using BnbDist.Optim8bit.Tests.Optimizers;
using TorchSharp;

namespace BnbDist.Optim8bit.Tests.Paging;

/// <summary>
/// Paged optimizers keep State1/State2 in host memory and stage them through page-sized buffers: with 4096-element
/// pages the test parameters need several pages (one parameter spans five, another crosses a page boundary), and the
/// results must be bit-identical to the non-paged optimizer.
/// </summary>
public class PagedOptimizerTests
{
    private static readonly PagingOptions SmallPages = new(PagedMode.Paged, PageElements: 4096);

    [Theory]
    [InlineData("PagedAdamW8bit", "AdamW8bit")]
    [InlineData("PagedAdamW32bit", "AdamW32bit")]
    [InlineData("PagedLion8bit", "Lion8bit")]
    [InlineData("PagedLion32bit", "Lion32bit")]
    public void MultiPageStagingIsBitIdenticalToTheResidentOptimizer(string paged, string resident)
    {
        using var run = new TrainingRun();
        var pp = run.NewParams();
        var rp = run.NewParams();
        using var popt = TrainingRun.Create(paged, pp, SmallPages);
        using var ropt = TrainingRun.Create(resident, rp);
        var recorder = new RecordingBackend();
        popt.BackendOverride = recorder;
        for (var s = 0; s < 5; s++)
        {
            run.Steps(popt, pp, s, s + 1);
            run.Steps(ropt, rp, s, s + 1);
            Assert.Equal(TrainingRun.Bytes(ropt, rp), TrainingRun.Bytes(popt, pp));
        }

        Assert.All(popt.States, st => Assert.True(st.IsPaged && st.State1!.device.type == DeviceType.CPU));
        Assert.All(recorder.Calls, c => Assert.True(c <= SmallPages.PageElements, $"a call staged {c} elements"));
        // 28,000 state elements in 4096-element pages: at least 7 staged pages per step.
        Assert.True(recorder.Calls.Count >= 7 * 5, $"{recorder.Calls.Count} backend calls");
        foreach (var p in pp.Concat(rp))
        {
            p.Dispose();
        }
    }

    [Fact]
    public void StagingUsesAboutOnePageOfDeviceMemoryNotTheWholeState()
    {
        using var run = new TrainingRun([100_000, 60_000]);
        var ps = run.NewParams();
        using var opt = TrainingRun.Create("PagedAdamW8bit", ps, SmallPages);
        run.Steps(opt, ps, 0, 2);
        // Two u8 staging buffers of one page each, whatever the state size (160,000 elements x 2 states here).
        Assert.Equal(2 * SmallPages.PageElements, opt.StagingBytes);
    }

    [Fact]
    public void ResidentModeKeepsStatesOnTheDeviceAndMatchesTheNonPagedOptimizer()
    {
        using var run = new TrainingRun();
        var pp = run.NewParams();
        var rp = run.NewParams();
        using var popt = TrainingRun.Create("PagedAdamW8bit", pp, new PagingOptions(PagedMode.Resident));
        using var ropt = TrainingRun.Create("AdamW8bit", rp);
        run.Steps(popt, pp, 0, 4);
        run.Steps(ropt, rp, 0, 4);
        Assert.Equal(TrainingRun.Bytes(ropt, rp), TrainingRun.Bytes(popt, pp));
        Assert.All(popt.States, st => Assert.False(st.IsPaged));
        Assert.Equal(0, popt.StagingBytes);
    }

    [Fact]
    public void PageSizeMustBeAWholeNumberOfBlocks()
    {
        using var run = new TrainingRun();
        var e = Assert.Throws<ArgumentException>(() => new PagedAdamW8bit(run.Params, paging: new PagingOptions(PageElements: 1000)));
        Assert.Equal("PageElements", e.ParamName);
    }

    /// <summary>The CPU backend, recording how many elements each call steps.</summary>
    private sealed class RecordingBackend : IOptimizerStepBackend
    {
        public List<long> Calls { get; } = [];

        public string Name => "recording";

        public void Step(UpdateRule rule, IReadOnlyList<ParamUpdate> updates)
        {
            Calls.Add(updates.Sum(u => u.Count));
            CpuStepBackend.Instance.Step(rule, updates);
        }
    }
}
