using BnbDist.Optim8bit.Kernels;
using BnbDist.Optim8bit.Kernels.Cuda;

namespace BnbDist.Optim8bit.Backends;

/// <summary>
/// The fused CUDA kernels behind the optimizer classes: one launch for all 8-bit tensors of a group and one for all
/// 32-bit ones (per dtype and hyperparameters, which <see cref="CudaOptimKernels"/> splits), with the CPU kernels'
/// arithmetic, so CPU and CUDA steps agree.
/// </summary>
internal sealed class CudaStepBackend : IOptimizerStepBackend
{
    public static readonly CudaStepBackend Instance = new();

    private CudaStepBackend()
    {
    }

    public string Name => "cuda (fused multi-tensor kernels)";

    public void Step(UpdateRule rule, IReadOnlyList<ParamUpdate> updates)
    {
        var cudaRule = rule switch
        {
            UpdateRule.Adam => CudaOptimRule.Adam,
            UpdateRule.Momentum => CudaOptimRule.Momentum,
            UpdateRule.Lion => CudaOptimRule.Lion,
            _ => CudaOptimRule.RmsProp,
        };
        var eight = updates.Where(u => u.Is8bit).ToList();
        if (eight.Count > 0)
        {
            // Every 8-bit state of an optimizer uses the same signed/unsigned dynamic maps.
            CudaOptimKernels.Step8bit(cudaRule, [.. eight.Select(Tensor)], eight[0].Qmap1!, eight[0].Qmap2);
        }

        var full = updates.Where(u => !u.Is8bit).ToList();
        if (full.Count > 0)
        {
            CudaOptimKernels.Step32bit(cudaRule, [.. full.Select(Tensor)]);
        }
    }

    private static CudaOptimTensor Tensor(ParamUpdate u) => new(u.Param, u.Grad, u.State1, u.State2, u.Absmax1, u.Absmax2,
        new CudaOptimHyper(u.Hyper.Lr, u.Hyper.Beta1, u.Hyper.Beta2, u.Hyper.Eps, u.Hyper.WeightDecay, u.Hyper.Step));
}
