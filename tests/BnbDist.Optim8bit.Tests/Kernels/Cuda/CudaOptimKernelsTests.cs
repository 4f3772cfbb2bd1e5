using BnbDist.Optim8bit.Kernels.Cuda;
using BnbDist.Tests;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Kernels.Cuda;

/// <summary>
/// The fused CUDA optimizer kernels replay bitsandbytes' golden opt.* trajectories with the CPU kernels' bounds, several
/// parameters per launch (the bit-for-bit comparison with a transcription of the CPU kernels on random f32/bf16/f16
/// data, special values included, is the kernel self-test's "optim" group).
/// </summary>
public class CudaOptimKernelsTests
{
    private static readonly string[] AdamFamily = ["Adam8bit", "AdamW8bit", "PagedAdamW8bit"];

    [Fact]
    public void Adam8bitFamilyInOneCallReplaysBitsandbytes()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        // Three parameters in one call: AdamW8bit and PagedAdamW8bit share hyperparameters (one launch, two tensors).
        var runs = AdamFamily.Select(name => new Run(name, "big", eightBit: true, twoStates: true,
            new CudaOptimHyper(1e-3f, 0.9f, 0.999f, 1e-8f, name == "Adam8bit" ? 0f : 0.01f, 0))).ToList();
        Replay(runs, CudaOptimRule.Adam, eightBit: true, paramBound: 1e-5);
        foreach (var r in runs)
        {
            // As on the CPU: every final state byte identical, absmax within 1e-6 relative.
            Assert.Equal(Bytes($"opt.{r.Name}.final_state_big.state1"), r.State1.cpu().data<byte>().ToArray());
            Assert.Equal(Bytes($"opt.{r.Name}.final_state_big.state2"), r.State2!.cpu().data<byte>().ToArray());
            AssertClose(Floats($"opt.{r.Name}.final_state_big.absmax1"), r.Absmax1!, 1e-6, $"{r.Name} absmax1");
            AssertClose(Floats($"opt.{r.Name}.final_state_big.absmax2"), r.Absmax2!, 1e-6, $"{r.Name} absmax2");
            r.Dispose();
        }
    }

    [Theory]
    [InlineData("SGD8bit", "Momentum", 0.9f, 0f, 0f, 1e-2f, 0f)]
    [InlineData("Lion8bit", "Lion", 0.9f, 0.99f, 0f, 1e-4f, 0.01f)]
    [InlineData("RMSprop8bit", "RmsProp", 0.99f, 0f, 1e-8f, 1e-3f, 0f)] // the golden run used lr 1e-3
    public void OneState8bitReplaysBitsandbytes(string name, string ruleName, float beta1, float beta2, float eps, float lr, float wd)
    {
        var rule = Enum.Parse<CudaOptimRule>(ruleName);
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        using var r = new Run(name, "big", eightBit: true, twoStates: false, new CudaOptimHyper(lr, beta1, beta2, eps, wd, 0));
        Replay([r], rule, eightBit: true, paramBound: 1e-5);
        var expected = Bytes($"opt.{name}.final_state_big.state1");
        var got = r.State1.cpu().data<byte>().ToArray();
        var same = expected.Zip(got).Count(z => z.First == z.Second);
        Assert.True(same >= 0.999 * expected.Length, $"{expected.Length - same} of {expected.Length} state bytes differ");
        AssertClose(Floats($"opt.{name}.final_state_big.absmax1"), r.Absmax1!, 1e-6, "absmax1");
    }

    [Fact]
    public void Adam32bitReplaysBitsandbytesForBigAndSmallParametersInOneCall()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        var hyper = new CudaOptimHyper(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 0);
        var runs = new List<Run>
        {
            new("Adam32", "big", eightBit: false, twoStates: true, hyper),
            new("Adam32", "small", eightBit: false, twoStates: true, hyper),
            new("Adam8bit", "small", eightBit: false, twoStates: true, hyper),
            new("AdamW8bit", "small", eightBit: false, twoStates: true, hyper with { WeightDecay = 0.01f }),
        };
        Replay(runs, CudaOptimRule.Adam, eightBit: false, paramBound: 2e-6); // the CPU kernel's bound (bitsandbytes' fast-math)
        AssertClose(Floats("opt.Adam32.final_state_big.state1"), runs[0].State1, 1e-6, "m", 1e-12);
        AssertClose(Floats("opt.Adam32.final_state_big.state2"), runs[0].State2!, 1e-6, "v", 1e-15);
        runs.ForEach(r => r.Dispose());
    }

    [Theory]
    [InlineData("SGD8bit", "Momentum", 0.9f, 0f, 0f, 1e-2f, 0f, 0.0)] // bit for bit, as the CPU kernel
    [InlineData("Lion8bit", "Lion", 0.9f, 0.99f, 0f, 1e-4f, 0.01f, 0.0)]
    [InlineData("RMSprop8bit", "RmsProp", 0.99f, 0f, 1e-8f, 1e-3f, 0f, 1e-7)] // bitsandbytes: sqrt.approx, __fdividef
    public void OneState32bitReplaysTheSmallParameters(string name, string ruleName, float beta1, float beta2, float eps, float lr,
        float wd, double bound)
    {
        var rule = Enum.Parse<CudaOptimRule>(ruleName);
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        using var r = new Run(name, "small", eightBit: false, twoStates: false, new CudaOptimHyper(lr, beta1, beta2, eps, wd, 0));
        Replay([r], rule, eightBit: false, paramBound: bound);
    }

    [Fact]
    public void TensorsOffTheGpuAreRefusedWithTheirName()
    {
        using var p = zeros(10);
        using var s = zeros(10, ScalarType.Byte);
        using var a = zeros(1);
        using var q = zeros(256);
        var t = new CudaOptimTensor(p, p, s, null, a, null, new CudaOptimHyper(1e-3f, 0.9f, 0.99f, 0f, 0f, 1));
        var ex = Assert.Throws<ArgumentException>(() => CudaOptimKernels.Step8bit(CudaOptimRule.Lion, [t], q, null));
        Assert.Contains("tensors[0].Param is on cpu", ex.Message, StringComparison.Ordinal);
    }

    // Steps every run 12 times (one call per step for all of them), checking each parameter after every step.
    private static void Replay(List<Run> runs, CudaOptimRule rule, bool eightBit, double paramBound)
    {
        using var q1 = CodeBooks.DynamicMap(true, TestDevices.Cuda);
        using var q2 = CodeBooks.DynamicMap(false, TestDevices.Cuda);
        for (var step = 1; step <= 12; step++)
        {
            using var scope = NewDisposeScope();
            var tensors = runs.Select(r => r.ForStep(step)).ToList();
            if (eightBit)
            {
                CudaOptimKernels.Step8bit(rule, tensors, q1, rule == CudaOptimRule.Adam ? q2 : null);
            }
            else
            {
                CudaOptimKernels.Step32bit(rule, tensors);
            }

            foreach (var r in runs)
            {
                var expected = Floats($"opt.{r.Name}.p_{r.Which}.{step - 1}");
                var got = r.Param.cpu().data<float>().ToArray();
                if (paramBound == 0)
                {
                    Assert.Equal(expected, got);
                }
                else
                {
                    var rel = Trajectory.RelativeL2(got, expected);
                    Assert.True(rel < paramBound, $"{r.Name} {r.Which} step {step}: ||dp||/||p|| = {rel:E2}");
                }
            }
        }
    }

    private static void AssertClose(float[] expected, Tensor actual, double rel, string what, double abs = 0)
    {
        var got = actual.cpu().data<float>().ToArray();
        Assert.Equal(expected.Length, got.Length);
        for (var i = 0; i < got.Length; i++)
        {
            Assert.True(Math.Abs(got[i] - expected[i]) <= (rel * Math.Abs(expected[i])) + abs, $"{what}[{i}]: {got[i]} vs {expected[i]}");
        }
    }

    private static float[] Floats(string name) => Golden.Get(name).data<float>().ToArray();

    private static byte[] Bytes(string name) => Golden.Get(name).data<byte>().ToArray();

    /// <summary>One golden parameter on the GPU with its states (zero, as bitsandbytes initializes them).</summary>
    private sealed class Run : IDisposable
    {
        private readonly CudaOptimHyper hyper;

        public Run(string name, string which, bool eightBit, bool twoStates, CudaOptimHyper hyper)
        {
            Name = name;
            Which = which;
            this.hyper = hyper;
            Param = Golden.Get($"opt.{name}.p_{which}.init").to(TestDevices.Cuda).DetachFromDisposeScope();
            var n = Param.numel();
            var stateType = eightBit ? ScalarType.Byte : ScalarType.Float32;
            State1 = zeros(n, stateType, TestDevices.Cuda).DetachFromDisposeScope();
            State2 = twoStates ? zeros(n, stateType, TestDevices.Cuda).DetachFromDisposeScope() : null;
            Absmax1 = eightBit ? zeros((n + 255) / 256, ScalarType.Float32, TestDevices.Cuda).DetachFromDisposeScope() : null;
            Absmax2 = eightBit && twoStates ? zeros((n + 255) / 256, ScalarType.Float32, TestDevices.Cuda).DetachFromDisposeScope() : null;
        }

        public string Name { get; }

        public string Which { get; }

        public Tensor Param { get; }

        public Tensor State1 { get; }

        public Tensor? State2 { get; }

        public Tensor? Absmax1 { get; }

        public Tensor? Absmax2 { get; }

        public CudaOptimTensor ForStep(int step) => new(Param, Golden.Get($"opt.{Name}.grad_{Which}.{step - 1}").to(TestDevices.Cuda), State1, State2,
            Absmax1, Absmax2, hyper with { Step = step });

        public void Dispose()
        {
            Param.Dispose();
            State1.Dispose();
            State2?.Dispose();
            Absmax1?.Dispose();
            Absmax2?.Dispose();
        }
    }
}
