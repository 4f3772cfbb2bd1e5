using BnbDist.Optim8bit.State;
using BnbDist.Optim8bit.Tests.Optimizers;

namespace BnbDist.Optim8bit.Tests.State;

/// <summary>
/// Saving an optimizer after some steps, loading the state into a fresh optimizer over parameters with the saved values,
/// and continuing gives exactly the bytes of an uninterrupted run (8-bit states, absmax, qmaps, 32-bit states, step),
/// through TorchSharp's binary save_state_dict/load_state_dict and through state_dict()/load_state_dict(...). State that
/// does not fit is refused with an exception naming the parameter and key.
/// </summary>
public class StateDictTests
{
    private static readonly PagingOptions SmallPages = new(PagedMode.Paged, PageElements: 4096);

    [Theory]
    [InlineData("AdamW8bit", true)]
    [InlineData("AdamW8bit", false)]
    [InlineData("Lion8bit", true)]
    [InlineData("SGD8bit", true)]
    [InlineData("RMSprop8bit", false)]
    [InlineData("Adam32bit", true)]
    [InlineData("PagedAdamW8bit", true)]
    public void ResumingFromSavedStateIsBitIdenticalToAnUninterruptedRun(string name, bool binary)
    {
        using var run = new TrainingRun();
        var straight = run.NewParams();
        using var reference = TrainingRun.Create(name, straight, SmallPages);
        run.Steps(reference, straight, 0, 6);

        var first = run.NewParams();
        using var before = TrainingRun.Create(name, first, SmallPages);
        run.Steps(before, first, 0, 3);

        // A fresh optimizer over fresh parameters holding the values at step 3.
        var resumed = run.NewParams();
        using (TorchSharp.torch.no_grad())
        {
            for (var i = 0; i < resumed.Length; i++)
            {
                resumed[i].copy_(first[i]);
            }
        }

        using var after = TrainingRun.Create(name, resumed, SmallPages);
        if (binary)
        {
            Reload(before, after);
        }
        else
        {
            after.load_state_dict(before.state_dict());
        }

        Assert.All(after.States, s => Assert.Equal(3, s.Step));
        Assert.Equal(before.States.Select(s => s.IsPaged), after.States.Select(s => s.IsPaged));
        run.Steps(after, resumed, 3, 6);
        Assert.Equal(TrainingRun.Bytes(reference, straight), TrainingRun.Bytes(after, resumed));
    }

    [Fact]
    public void StateOfAnotherShapeIsRefusedNamingParameterAndKey()
    {
        using var saved = new TrainingRun([5_000, 9_000]);
        using var other = new TrainingRun([5_000, 9_001]);
        using var a = TrainingRun.Create("AdamW8bit", saved.Params);
        saved.Steps(a, saved.Params, 0, 1);
        using var b = TrainingRun.Create("AdamW8bit", other.Params);
        var e = Assert.Throws<OptimizerStateMismatchException>(() => Reload(a, b));
        Assert.Equal(1, e.ParameterIndex);
        Assert.Equal("state1", e.Key);
    }

    [Fact]
    public void StateOfAnotherPrecisionIsRefusedNamingParameterAndKey()
    {
        using var run = new TrainingRun([5_000]);
        using var eight = new AdamW(run.Params, optimBits: 8, manager: new());
        run.Steps(eight, run.Params, 0, 1);
        var fresh = run.NewParams();
        using var thirtyTwo = new AdamW(fresh, optimBits: 32, manager: new());
        var e = Assert.Throws<OptimizerStateMismatchException>(() => Reload(eight, thirtyTwo));
        Assert.Equal(0, e.ParameterIndex);
        Assert.Equal("state1", e.Key);
        Assert.Contains("32-bit", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void StateOfAnotherOptimizerTypeIsRefused()
    {
        using var run = new TrainingRun([5_000]);
        using var lion = TrainingRun.Create("Lion8bit", run.Params);
        run.Steps(lion, run.Params, 0, 1);
        var fresh = run.NewParams();
        using var adam = TrainingRun.Create("AdamW8bit", fresh);

        var e = Assert.Throws<OptimizerStateMismatchException>(() => adam.load_state_dict(lion.state_dict()));
        Assert.Equal(0, e.ParameterIndex);
        Assert.Equal("optimizer", e.Key);

        // TorchSharp's binary format records the optimizer type first; its own check refuses another type.
        Assert.Throws<InvalidDataException>(() => Reload(lion, adam));

        // TorchSharp's own AdamW state is not ours either.
        using var torchAdam = TorchSharp.torch.optim.AdamW(fresh);
        var t = Assert.Throws<OptimizerStateMismatchException>(() => adam.load_state_dict(torchAdam.state_dict()));
        Assert.Equal("optimizer", t.Key);
    }

    [Fact]
    public void ATruncatedStreamIsATypedError()
    {
        using var run = new TrainingRun([5_000]);
        using var a = TrainingRun.Create("AdamW8bit", run.Params);
        run.Steps(a, run.Params, 0, 1);
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            a.save_state_dict(writer);
        }

        var fresh = run.NewParams();
        using var b = TrainingRun.Create("AdamW8bit", fresh);
        using var reader = new BinaryReader(new MemoryStream(stream.ToArray()[..200]));
        Assert.ThrowsAny<IOException>(() => b.load_state_dict(reader));
    }

    private static void Reload(Optimizer8bit from, Optimizer8bit into)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            from.save_state_dict(writer);
        }

        stream.Position = 0;
        using var reader = new BinaryReader(stream);
        into.load_state_dict(reader);
    }
}
