using BnbDist.Optim8bit.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>
/// The fused-kernel optimizer rows of issue #4 (CUDA only): one step of the 8-bit AdamW and Lion kernels and the 32-bit
/// AdamW kernel on 4 f32 parameters of 64M elements; a 200-tensor model (log-uniform sizes 1K..16M, fixed seed)
/// against the same element count in 4 tensors; optimizer state bytes per parameter. Bytes per element: what the step
/// must move (8-bit AdamW: param, grad read, param written = 12, two state bytes read and written = 4). The rows timed
/// through optimizer classes (TorchSharp's AdamW, PagedAdamW8bit) come from <see cref="OptimizerClassBench"/>.
/// </summary>
internal sealed class OptimizerBench(Device device, Timing timing)
{
    private const long M64 = 64L << 20;

    /// <summary>State bytes per parameter, by optimizer (written to the results file's top level).</summary>
    public Dictionary<string, string> StateBytes { get; } = [];

    public IEnumerable<BenchResult> Run()
    {
        if (device.type != DeviceType.CUDA)
        {
            yield break;
        }

        var hyper = new CudaOptimHyper(1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
        using (var group = new Group(Enumerable.Repeat(M64, 4).ToArray(), device, twoStates: true))
        {
            var t = timing.Measure(i => group.Step8bit(CudaOptimRule.Adam, hyper with { Step = i + 1 }));
            StateBytes["adamw8bit"] = $"{group.StateBytesPerParam:F4}";
            yield return Row("adamw8bit_step_4x64M", t, 16 * group.Elements, $"fused kernel, one launch; state {group.StateBytesPerParam:F4} bytes/param", group.StateBytesPerParam);
        }

        using (var group = new Group(Enumerable.Repeat(M64, 4).ToArray(), device, twoStates: false))
        {
            var lion = new CudaOptimHyper(1e-4f, 0.9f, 0.99f, 0f, 0.01f, 1);
            var t = timing.Measure(i => group.Step8bit(CudaOptimRule.Lion, lion with { Step = i + 1 }));
            StateBytes["lion8bit"] = $"{group.StateBytesPerParam:F4}";
            yield return Row("lion8bit_step_4x64M", t, 14 * group.Elements, $"fused kernel, one launch; state {group.StateBytesPerParam:F4} bytes/param", group.StateBytesPerParam);
        }

        using (var group = new Group(Enumerable.Repeat(M64, 4).ToArray(), device, twoStates: true, eightBit: false))
        {
            var t = timing.Measure(i => group.Step32bit(CudaOptimRule.Adam, hyper with { Step = i + 1 }));
            StateBytes["adamw32bit"] = $"{group.StateBytesPerParam:F4}";
            yield return Row("adamw32bit_step_4x64M", t, 28 * group.Elements, $"fused kernel, one launch; state {group.StateBytesPerParam:F4} bytes/param", group.StateBytesPerParam);
        }

        var rng = new Random(42);
        var sizes = Enumerable.Range(0, 200).Select(_ => (long)Math.Exp(Math.Log(1024) + (rng.NextDouble() * (Math.Log(16L << 20) - Math.Log(1024))))).ToArray();
        var total = sizes.Sum();
        using (var group = new Group(sizes, device, twoStates: true))
        {
            var t = timing.Measure(i => group.Step8bit(CudaOptimRule.Adam, hyper with { Step = i + 1 }));
            yield return Row("adamw8bit_step_200_tensors_1K_16M", t, 16 * total, $"{total} elements in 200 tensors (log-uniform 1K..16M, seed 42), one launch");
        }

        using (var group = new Group(Enumerable.Repeat(total / 4, 4).ToArray(), device, twoStates: true))
        {
            var t = timing.Measure(i => group.Step8bit(CudaOptimRule.Adam, hyper with { Step = i + 1 }));
            yield return Row("adamw8bit_step_same_elements_4_tensors", t, 16 * group.Elements, $"{group.Elements} elements in 4 tensors (baseline of the 200-tensor row)");
        }
    }

    private static long Bytes(Tensor? t) => t is null ? 0 : t.numel() * t.element_size();

    private BenchResult Row(string name, double[] t, long bytes, string note, double? stateBytesPerParam = null) =>
        new(name, Timing.Median(t), t[0], t[^1], timing.Repeats, bytes, note, StateBytesPerParam: stateBytesPerParam);

    /// <summary>Parameters, gradients and zero-initialized states of one parameter group on the device.</summary>
    private sealed class Group : IDisposable
    {
        private readonly List<Tensor> owned = [];
        private readonly List<(Tensor P, Tensor G, Tensor S1, Tensor? S2, Tensor? A1, Tensor? A2)> tensors = [];
        private readonly Tensor qmap1;
        private readonly Tensor qmap2;

        public Group(long[] sizes, Device device, bool twoStates, bool eightBit = true)
        {
            var stateType = eightBit ? ScalarType.Byte : ScalarType.Float32;
            foreach (var n in sizes)
            {
                var blocks = (n + 255) / 256;
                var p = Own(randn(n, device: device));
                var g = Own(randn(n, device: device));
                var s1 = Own(zeros(n, stateType, device));
                var s2 = twoStates ? Own(zeros(n, stateType, device)) : null;
                var a1 = eightBit ? Own(zeros(blocks, ScalarType.Float32, device)) : null;
                var a2 = eightBit && twoStates ? Own(zeros(blocks, ScalarType.Float32, device)) : null;
                tensors.Add((p, g, s1, s2, a1, a2));
            }

            qmap1 = Own(CodeBooks.DynamicMap(true, device));
            qmap2 = Own(CodeBooks.DynamicMap(false, device));
            Elements = sizes.Sum();
            var stateBytes = tensors.Sum(t => Bytes(t.S1) + Bytes(t.S2) + Bytes(t.A1) + Bytes(t.A2));
            StateBytesPerParam = (double)stateBytes / Elements;
        }

        public long Elements { get; }

        public double StateBytesPerParam { get; }

        public void Step8bit(CudaOptimRule rule, CudaOptimHyper h) =>
            CudaOptimKernels.Step8bit(rule, [.. tensors.Select(t => new CudaOptimTensor(t.P, t.G, t.S1, t.S2, t.A1, t.A2, h))], qmap1, qmap2);

        public void Step32bit(CudaOptimRule rule, CudaOptimHyper h) =>
            CudaOptimKernels.Step32bit(rule, [.. tensors.Select(t => new CudaOptimTensor(t.P, t.G, t.S1, t.S2, null, null, h))]);

        public void Dispose() => owned.ForEach(t => t.Dispose());

        private Tensor Own(Tensor t)
        {
            owned.Add(t);
            return t;
        }
    }
}
