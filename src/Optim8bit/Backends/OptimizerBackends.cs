using BnbDist.Optim8bit.Kernels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Backends;

/// <summary>
/// Picks the optimizer-step backend for a device (CPU: the C# kernels; CUDA: the fused kernels when libbnbdist_kernels
/// is loaded; otherwise TorchSharp ops) and checks every tensor before a backend runs. Each choice is logged once.
/// </summary>
public static class OptimizerBackends
{
    private static int cpuLogged;
    private static int opsLogged;
    private static int cudaLogged;

    /// <summary>Where backend-selection messages go; set it once at start-up (defaults to no logging).</summary>
    public static ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>The name of the backend that steps parameters on <paramref name="device"/>.</summary>
    public static string NameFor(Device device) => For(device).Name;

    internal static IOptimizerStepBackend For(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.type == DeviceType.CPU)
        {
            if (Interlocked.Exchange(ref cpuLogged, 1) == 0)
            {
                Logger.LogInformation("BnbDist optimizer step for CPU tensors: cpu (C# kernels, {Threads} threads).", Environment.ProcessorCount);
            }

            return CpuStepBackend.Instance;
        }

        if (device.type == DeviceType.CUDA && Kernels.Cuda.CudaOptimKernels.IsAvailable)
        {
            if (Interlocked.Exchange(ref cudaLogged, 1) == 0)
            {
                Logger.LogInformation("BnbDist optimizer step for CUDA tensors: {Backend}.", CudaStepBackend.Instance.Name);
            }

            return CudaStepBackend.Instance;
        }

        if (Interlocked.Exchange(ref opsLogged, 1) == 0)
        {
            Logger.LogInformation("BnbDist optimizer step for {Device} tensors: torch-ops (no fused optimizer kernel for this device yet; correct, not fast).", device.type);
        }

        return TorchOpsStepBackend.Instance;
    }

    /// <summary>Validates the updates, then runs them on <paramref name="backend"/>.</summary>
    internal static void Run(IOptimizerStepBackend backend, UpdateRule rule, IReadOnlyList<ParamUpdate> updates)
    {
        for (var k = 0; k < updates.Count; k++)
        {
            Validate(rule, updates[k], k);
        }

        if (updates.Count > 0)
        {
            backend.Step(rule, updates);
        }
    }

    private static void Validate(UpdateRule rule, ParamUpdate u, int k)
    {
        var n = u.Count;
        var device = u.Param.device;
        var dtype = u.Param.dtype;
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            throw new ArgumentException($"updates[{k}].Param: dtype {dtype} is not float32, bfloat16 or float16.", nameof(u));
        }

        Check(u.Param, $"updates[{k}].Param", dtype, n, device);
        Check(u.Grad, $"updates[{k}].Grad", dtype, n, device);
        var stateType = u.Is8bit ? ScalarType.Byte : ScalarType.Float32;
        Check(u.State1, $"updates[{k}].State1", stateType, n, device);
        if (rule.HasState2() != u.State2 is not null)
        {
            throw new ArgumentException($"updates[{k}].State2: the {rule.KernelName()} rule {(rule.HasState2() ? "needs" : "has no")} a second state.", nameof(u));
        }

        if (u.State2 is not null)
        {
            Check(u.State2, $"updates[{k}].State2", stateType, n, device);
        }

        if (u.Is8bit)
        {
            var blocks = (n + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
            Check(u.Absmax1 ?? throw Missing(k, "Absmax1"), $"updates[{k}].Absmax1", ScalarType.Float32, blocks, device);
            Check(u.Qmap1 ?? throw Missing(k, "Qmap1"), $"updates[{k}].Qmap1", ScalarType.Float32, 256, device);
            if (u.State2 is not null)
            {
                Check(u.Absmax2 ?? throw Missing(k, "Absmax2"), $"updates[{k}].Absmax2", ScalarType.Float32, blocks, device);
                Check(u.Qmap2 ?? throw Missing(k, "Qmap2"), $"updates[{k}].Qmap2", ScalarType.Float32, 256, device);
            }
        }

        var h = u.Hyper;
        if (h.Step < 1 || !float.IsFinite(h.Lr) || !float.IsFinite(h.Beta1) || !float.IsFinite(h.Beta2) || !float.IsFinite(h.Eps) || !float.IsFinite(h.WeightDecay))
        {
            throw new ArgumentException($"updates[{k}].Hyper: non-finite hyperparameter or step < 1 ({h}).", nameof(u));
        }
    }

    private static void Check(Tensor t, string what, ScalarType dtype, long count, Device device)
    {
        if (t.dtype != dtype || t.numel() != count || t.dim() != 1 || !t.is_contiguous() || t.device.type != device.type || t.device.index != device.index)
        {
            throw new ArgumentException(
                $"{what}: expected a contiguous 1-D {dtype}[{count}] on {device}, got {t.dtype}[{string.Join(", ", t.shape)}] on {t.device}{(t.is_contiguous() ? string.Empty : " (not contiguous)")}.",
                nameof(t));
        }
    }

    private static ArgumentException Missing(int k, string name) =>
        new($"updates[{k}].{name}: required for 8-bit states.", name);
}
