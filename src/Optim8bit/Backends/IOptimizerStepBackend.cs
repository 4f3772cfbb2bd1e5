using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Backends;

/// <summary>
/// Runs one optimizer step for a whole parameter group at once (the multi-tensor form a fused kernel needs: one launch
/// for many tensors). Implementations: <see cref="CpuStepBackend"/> (the C# kernels, multi-threaded over blocks) and
/// <see cref="TorchOpsStepBackend"/> (TorchSharp ops, any device). A fused CUDA kernel plugs in here.
/// </summary>
/// <remarks>
/// <see cref="OptimizerBackends.Run"/> validates every tensor before a backend sees it, so implementations may take raw
/// pointers: all tensors are 1-D, contiguous and on one device; Grad has Param's dtype and length; 8-bit states are
/// u8 with one f32 absmax per 256 elements and f32[256] qmaps; 32-bit states are f32 and have no absmax or qmap.
/// </remarks>
internal interface IOptimizerStepBackend
{
    /// <summary>A short name for logs and diagnostics.</summary>
    string Name { get; }

    /// <summary>Applies one step of <paramref name="rule"/> to every update, in place (parameters, states, absmax).</summary>
    void Step(UpdateRule rule, IReadOnlyList<ParamUpdate> updates);
}

/// <summary>Per-tensor hyperparameters of one step (f32, as bitsandbytes passes them to its kernels).</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Beta1">β1 (Adam, Lion), momentum (SGD) or α (RMSprop).</param>
/// <param name="Beta2">β2 (Adam, Lion); unused otherwise.</param>
/// <param name="Eps">ε (Adam, RMSprop).</param>
/// <param name="WeightDecay">Weight decay (decoupled for Adam and Lion, coupled for SGD and RMSprop).</param>
/// <param name="Step">The step number after this step's increment (1 on the first step).</param>
internal readonly record struct StepHyperparameters(float Lr, float Beta1, float Beta2, float Eps, float WeightDecay, int Step);

/// <summary>The tensors of one parameter (or one page of it) for one step.</summary>
/// <param name="Param">The parameter, flattened (f32, bf16 or f16).</param>
/// <param name="Grad">Its gradient, flattened, same dtype.</param>
/// <param name="State1">First state: u8 codes (8-bit) or f32.</param>
/// <param name="State2">Second state (Adam's v), or null for 1-state rules.</param>
/// <param name="Absmax1">Per-block absmax of State1 (8-bit only).</param>
/// <param name="Absmax2">Per-block absmax of State2 (8-bit Adam only).</param>
/// <param name="Qmap1">Signed dynamic map for State1 (8-bit only).</param>
/// <param name="Qmap2">Unsigned dynamic map for State2 (8-bit Adam only).</param>
/// <param name="Hyper">The step's hyperparameters for this tensor.</param>
internal sealed record ParamUpdate(Tensor Param, Tensor Grad, Tensor State1, Tensor? State2, Tensor? Absmax1, Tensor? Absmax2,
    Tensor? Qmap1, Tensor? Qmap2, StepHyperparameters Hyper)
{
    /// <summary>Whether the states are 8-bit blockwise.</summary>
    public bool Is8bit => State1.dtype == ScalarType.Byte;

    /// <summary>Number of elements.</summary>
    public long Count => Param.numel();
}
