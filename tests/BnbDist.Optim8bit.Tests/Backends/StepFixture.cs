using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Backends;

/// <summary>One tensor's parameter, gradients and state for backend tests, built from a fixed seed.</summary>
internal sealed class StepFixture : IDisposable
{
    private readonly List<Tensor> owned = [];

    public StepFixture(UpdateRule rule, bool is8bit, ScalarType dtype, long n, int seed)
    {
        Rule = rule;
        var gen = new TorchSharp.torch.Generator((ulong)seed);
        Param = Own(randn(n, generator: gen).mul(0.1f).to(dtype));
        Grads = [.. Enumerable.Range(0, 3).Select(_ => Own(randn(n, generator: gen).mul(0.01f).to(dtype)))];
        var stateType = is8bit ? ScalarType.Byte : ScalarType.Float32;
        State1 = Own(zeros(n, stateType));
        State2 = rule.HasState2() ? Own(zeros(n, stateType)) : null;
        if (is8bit)
        {
            var blocks = (n + 255) / 256;
            Absmax1 = Own(zeros(blocks));
            Absmax2 = rule.HasState2() ? Own(zeros(blocks)) : null;
            Qmap1 = Own(CodeBooks.DynamicMap(true));
            Qmap2 = rule.HasState2() ? Own(CodeBooks.DynamicMap(false)) : null;
        }
    }

    public UpdateRule Rule { get; }

    public Tensor Param { get; }

    public Tensor[] Grads { get; }

    public Tensor State1 { get; }

    public Tensor? State2 { get; }

    public Tensor? Absmax1 { get; }

    public Tensor? Absmax2 { get; }

    public Tensor? Qmap1 { get; }

    public Tensor? Qmap2 { get; }

    /// <summary>The update for step <paramref name="step"/> (1-based), with hyperparameters typical of the rule.</summary>
    public ParamUpdate Update(int step)
    {
        var h = Rule switch
        {
            UpdateRule.Adam => new StepHyperparameters(1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step),
            UpdateRule.Momentum => new StepHyperparameters(1e-2f, 0.9f, 0f, 0f, 0.01f, step),
            UpdateRule.Lion => new StepHyperparameters(1e-4f, 0.9f, 0.99f, 0f, 0.01f, step),
            _ => new StepHyperparameters(1e-3f, 0.99f, 0f, 1e-8f, 0.01f, step),
        };
        return new ParamUpdate(Param, Grads[(step - 1) % Grads.Length], State1, State2, Absmax1, Absmax2, Qmap1, Qmap2, h);
    }

    /// <summary>Every tensor that a step writes, as raw bytes (for bit-exact comparisons).</summary>
    public byte[][] Snapshot() =>
        [.. new[] { Param, State1, State2, Absmax1, Absmax2 }.Where(t => t is not null).Select(t => Bytes(t!))];

    public void Dispose()
    {
        foreach (var t in owned)
        {
            t.Dispose();
        }
    }

    public static byte[] Bytes(Tensor t) => t.contiguous().cpu().bytes.ToArray();

    private Tensor Own(Tensor t)
    {
        owned.Add(t);
        return t;
    }
}
