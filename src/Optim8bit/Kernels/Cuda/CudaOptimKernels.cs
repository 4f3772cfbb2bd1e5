using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using BnbDist.Backends.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Kernels.Cuda;

/// <summary>Update rules of the CUDA optimizer kernels (BNBD_OPTIM_*; the order of the CPU kernels' rules).</summary>
internal enum CudaOptimRule
{
    /// <summary>Adam/AdamW (two states).</summary>
    Adam = 0,

    /// <summary>SGD with momentum.</summary>
    Momentum = 1,

    /// <summary>Lion.</summary>
    Lion = 2,

    /// <summary>RMSprop.</summary>
    RmsProp = 3,
}

/// <summary>Hyperparameters of one step, as the CPU kernels take them.</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Beta1">β1 (Adam, Lion), momentum (SGD) or α (RMSprop).</param>
/// <param name="Beta2">β2 (Adam, Lion); unused otherwise.</param>
/// <param name="Eps">ε (Adam, RMSprop).</param>
/// <param name="WeightDecay">Weight decay.</param>
/// <param name="Step">Step number after this step's increment (1 on the first step).</param>
internal readonly record struct CudaOptimHyper(float Lr, float Beta1, float Beta2, float Eps, float WeightDecay, int Step);

/// <summary>One parameter's tensors for a step: all 1-D views or contiguous tensors on one CUDA device.</summary>
/// <param name="Param">Parameter (f32, bf16 or f16), updated in place.</param>
/// <param name="Grad">Gradient, same dtype and length.</param>
/// <param name="State1">u8 codes (8-bit) or f32 (32-bit).</param>
/// <param name="State2">Adam's second state (same kind as State1), or null.</param>
/// <param name="Absmax1">8-bit only: f32, one per 256 elements.</param>
/// <param name="Absmax2">8-bit Adam only.</param>
/// <param name="Hyper">This parameter's hyperparameters.</param>
internal sealed record CudaOptimTensor(Tensor Param, Tensor Grad, Tensor State1, Tensor? State2, Tensor? Absmax1, Tensor? Absmax2,
    CudaOptimHyper Hyper);

/// <summary>
/// P/Invoke wrapper of the fused multi-tensor optimizer kernels of libbnbdist_kernels (bnbd_optimizer_8bit_blockwise,
/// bnbd_optimizer_32bit): one launch covers every tensor of a group that shares dtype and hyperparameters. The
/// arithmetic is the CPU kernels' (see the contract in native/kernels/include/bnbdist_kernels.h); the host scalars
/// (bias corrections, step size, decay) are computed here exactly as the CPU kernels compute them. Launches go to the
/// legacy default stream, ordered with TorchSharp's own ops.
/// </summary>
internal static unsafe class CudaOptimKernels
{
    /// <summary>Elements per state block.</summary>
    public const int BlockSize = 256;

    // What validation and the descriptors need of a tensor, read once per tensor object: every property read is a
    // P/Invoke into libtorch, and a 200-tensor group would otherwise spend about a millisecond of host time per step
    // on them. A TorchSharp tensor object never changes device, dtype, shape or storage (moves make new objects).
    private static readonly ConditionalWeakTable<Tensor, Facts> Known = [];

    /// <summary>Whether the kernel library is loaded.</summary>
    public static bool IsAvailable => KernelLibrary.IsAvailable;

    /// <summary>One step of an 8-bit blockwise optimizer. qmap1: the signed dynamic map; qmap2: the unsigned one (Adam), both f32[256] on the device.</summary>
    /// <exception cref="ArgumentException">A tensor has the wrong device, dtype, length or layout (the message names it).</exception>
    public static void Step8bit(CudaOptimRule rule, IReadOnlyList<CudaOptimTensor> tensors, Tensor qmap1, Tensor? qmap2)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(qmap1);
        var device = Validate(rule, tensors, eightBit: true);
        if (device is null)
        {
            return;
        }

        CheckQmap(qmap1, device, nameof(qmap1));
        if (rule == CudaOptimRule.Adam)
        {
            ArgumentNullException.ThrowIfNull(qmap2);
            CheckQmap(qmap2, device, nameof(qmap2));
        }

        var fn = (delegate* unmanaged<int, int, Descriptor*, int, long, float*, float*, Hparams*, nint, int>)Export("bnbd_optimizer_8bit_blockwise");
        var q1 = (float*)TensorMemory.DataPointer(qmap1);
        var q2 = qmap2 is null ? null : (float*)TensorMemory.DataPointer(qmap2);
        Launch(tensors, device, (dtype, desc, n, blocks, hp) => fn((int)rule, dtype, desc, n, blocks, q1, q2, hp, 0), "bnbd_optimizer_8bit_blockwise");
        GC.KeepAlive(qmap1);
        GC.KeepAlive(qmap2);
    }

    /// <summary>One step of an optimizer with 32-bit (f32) states.</summary>
    /// <exception cref="ArgumentException">A tensor has the wrong device, dtype, length or layout (the message names it).</exception>
    public static void Step32bit(CudaOptimRule rule, IReadOnlyList<CudaOptimTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var device = Validate(rule, tensors, eightBit: false);
        if (device is null)
        {
            return;
        }

        var fn = (delegate* unmanaged<int, int, Descriptor*, int, long, Hparams*, nint, int>)Export("bnbd_optimizer_32bit");
        Launch(tensors, device, (dtype, desc, n, blocks, hp) => fn((int)rule, dtype, desc, n, blocks, hp, 0), "bnbd_optimizer_32bit");
    }

    /// <summary>The kernels' host scalars, computed as the CPU kernels compute them.</summary>
    internal static Hparams Scalars(CudaOptimHyper h)
    {
        var correction1 = 1f - MathF.Pow(h.Beta1, h.Step);
        var correction2 = MathF.Sqrt(1f - MathF.Pow(h.Beta2, h.Step));
        return new Hparams
        {
            Beta1 = h.Beta1,
            Beta2 = h.Beta2,
            Eps = h.Eps,
            Lr = h.Lr,
            WeightDecay = h.WeightDecay,
            StepSize = -h.Lr * correction2 / correction1,
            Correction2 = correction2,
            Decay = MathF.FusedMultiplyAdd(-h.Lr, h.WeightDecay, 1f),
            Step = h.Step,
        };
    }

    private delegate int LaunchFn(int dtype, Descriptor* descriptors, int count, long totalBlocks, Hparams* hp);

    // One launch per (dtype, hyperparameters) group; the descriptor array is copied to the device on the default
    // stream, so the kernel that follows on that stream reads it, and the caching allocator may reuse it afterwards.
    private static void Launch(IReadOnlyList<CudaOptimTensor> tensors, Device device, LaunchFn launch, string op)
    {
        CudaRuntime.SetDevice(device.index < 0 ? 0 : device.index);
        foreach (var group in tensors.Where(t => Of(t.Param).Numel > 0).GroupBy(t => (Of(t.Param).DType, t.Hyper)))
        {
            var list = group.ToList();
            var descriptors = new Descriptor[list.Count];
            long blocks = 0;
            for (var i = 0; i < list.Count; i++)
            {
                var t = list[i];
                descriptors[i] = new Descriptor
                {
                    Param = Of(t.Param).Data,
                    Grad = Of(t.Grad).Data,
                    State1 = Of(t.State1).Data,
                    State2 = t.State2 is null ? 0 : Of(t.State2).Data,
                    Absmax1 = t.Absmax1 is null ? 0 : Of(t.Absmax1).Data,
                    Absmax2 = t.Absmax2 is null ? 0 : Of(t.Absmax2).Data,
                    Numel = Of(t.Param).Numel,
                    BlockOffset = blocks,
                };
                blocks += (descriptors[i].Numel + BlockSize - 1) / BlockSize;
            }

            using var onDevice = empty(descriptors.Length * sizeof(Descriptor), ScalarType.Byte, device);
            var hp = Scalars(group.Key.Hyper);
            fixed (Descriptor* host = descriptors)
            {
                CudaRuntime.Check(CudaRuntime.cudaMemcpyAsync(TensorMemory.DataPointer(onDevice), (nint)host,
                    (nuint)(descriptors.Length * sizeof(Descriptor)), CudaRuntime.MemcpyHostToDevice, 0), "cudaMemcpyAsync (optimizer descriptors)");
            }

            KernelLibrary.Check(launch(DType(group.Key.DType), (Descriptor*)TensorMemory.DataPointer(onDevice), list.Count, blocks, &hp), op);
        }

        GC.KeepAlive(tensors);
    }

    // Returns the common device, or null when there is nothing to do.
    private static Device? Validate(CudaOptimRule rule, IReadOnlyList<CudaOptimTensor> tensors, bool eightBit)
    {
        if (!Enum.IsDefined(rule))
        {
            throw new ArgumentOutOfRangeException(nameof(rule), rule, "unknown update rule");
        }

        Device? device = null;
        for (var i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i] ?? throw new ArgumentException($"tensors[{i}] is null.", nameof(tensors));
            ArgumentNullException.ThrowIfNull(t.Param, $"tensors[{i}].Param");
            var param = Of(t.Param);
            var n = param.Numel;
            device ??= t.Param.device;
            Check(t.Param, $"tensors[{i}].Param", device, n, null);
            if (param.DType is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            {
                throw new ArgumentException($"tensors[{i}].Param must be float32, bfloat16 or float16; got {param.DType}.", nameof(tensors));
            }

            Check(t.Grad, $"tensors[{i}].Grad", device, n, param.DType);
            var stateType = eightBit ? ScalarType.Byte : ScalarType.Float32;
            Check(t.State1, $"tensors[{i}].State1", device, n, stateType);
            var blocks = (n + BlockSize - 1) / BlockSize;
            if (eightBit)
            {
                Check(t.Absmax1 ?? throw new ArgumentException($"tensors[{i}].Absmax1 is required for 8-bit states.", nameof(tensors)),
                    $"tensors[{i}].Absmax1", device, blocks, ScalarType.Float32);
            }

            if (rule == CudaOptimRule.Adam)
            {
                Check(t.State2 ?? throw new ArgumentException($"tensors[{i}].State2 is required for Adam.", nameof(tensors)),
                    $"tensors[{i}].State2", device, n, stateType);
                if (eightBit)
                {
                    Check(t.Absmax2 ?? throw new ArgumentException($"tensors[{i}].Absmax2 is required for 8-bit Adam.", nameof(tensors)),
                        $"tensors[{i}].Absmax2", device, blocks, ScalarType.Float32);
                }
            }
        }

        if (device is null)
        {
            return null;
        }

        if (!KernelLibrary.IsAvailable)
        {
            throw new InvalidOperationException($"The CUDA optimizer step needs BnbDist's kernels, which are not available: {KernelLibrary.LoadError}");
        }

        return device;
    }

    private static void Check(Tensor t, string name, Device device, long numel, ScalarType? dtype)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        var f = Of(t);
        if (f.Type != DeviceType.CUDA || f.Index != device.index || device.type != DeviceType.CUDA)
        {
            throw new ArgumentException($"{name} is on {t.device}; every tensor of a CUDA optimizer step must be on one CUDA device ({device}).", name);
        }

        if (dtype is { } d && f.DType != d)
        {
            throw new ArgumentException($"{name} must be {d}; got {f.DType}.", name);
        }

        if (f.Numel != numel)
        {
            throw new ArgumentException($"{name} must have {numel} elements; got {f.Numel}.", name);
        }

        if (!f.Contiguous)
        {
            throw new ArgumentException($"{name} must be contiguous.", name);
        }
    }

    private static Facts Of(Tensor t) => Known.GetValue(t, static x => new Facts(x.numel(), x.dtype, x.device_type, x.device_index,
        x.is_contiguous(), x.device_type == DeviceType.CUDA ? TensorMemory.DataPointer(x) : 0));

    private static void CheckQmap(Tensor q, Device device, string name) => Check(q, name, device, 256, ScalarType.Float32);

    private static int DType(ScalarType t) => t switch
    {
        ScalarType.Float32 => 0,
        ScalarType.BFloat16 => 1,
        _ => 2,
    };

    private static nint Export(string name) => NativeLibrary.GetExport(KernelLibrary.Handle, name);

    private sealed record Facts(long Numel, ScalarType DType, DeviceType Type, int Index, bool Contiguous, nint Data);

    /// <summary>bnbd_optim_tensor (64 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Descriptor
    {
        public nint Param;
        public nint Grad;
        public nint State1;
        public nint State2;
        public nint Absmax1;
        public nint Absmax2;
        public long Numel;
        public long BlockOffset;
    }

    /// <summary>bnbd_optim_hparams (40 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Hparams
    {
        public float Beta1;
        public float Beta2;
        public float Eps;
        public float Lr;
        public float WeightDecay;
        public float StepSize;
        public float Correction2;
        public float Decay;
        public int Step;
        public int Reserved;
    }
}
