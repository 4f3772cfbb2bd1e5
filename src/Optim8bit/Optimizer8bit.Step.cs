using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Paging;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit;

public abstract partial class Optimizer8bit
{
    /// <summary>
    /// One optimization step: runs <paramref name="closure"/> (if any) with gradients enabled, then updates every
    /// parameter that has a gradient, one backend call per group (paged states: one per staged page).
    /// </summary>
    /// <returns>The closure's loss, or null.</returns>
    /// <exception cref="ArgumentException">A sparse gradient, a gradient of another dtype or size, a group on two devices, or a non-finite hyperparameter (named).</exception>
    public override Tensor step(Func<Tensor>? closure = null)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var snapshot = Manager.Snapshot();
        return _step<Optimizer8bitParamGroup>(g => StepGroup(g, snapshot), closure)!;
    }

    private void StepGroup(Optimizer8bitParamGroup group, OverrideSnapshot snapshot)
    {
        var gi = _parameter_groups.IndexOf(group);
        CheckOptions(group.Options, gi);
        var resident = new List<ParamUpdate>();
        var paged = new List<ParamUpdate>();
        var copies = new List<(Parameter Param, Tensor Contiguous)>();
        Device? device = null;
        var pi = -1;
        foreach (var p in group.Parameters)
        {
            pi++;
            var grad = p.grad;
            if (grad is null)
            {
                continue;
            }

            CheckParameter(p, gi, pi, ref device);
            CheckGradient(p, grad, gi, pi);
            var state = StateOf(p);
            var config = Effective(group, p, snapshot);
            if (!state.IsInitialized)
            {
                state.Allocate(config.Use8bit(p.numel()), StatesInHost, Rule);
            }

            state.Step++;
            var hyper = config.Hyperparameters(state.Step);
            var work = p.is_contiguous() ? p : p.contiguous();
            if (!ReferenceEquals(work, p))
            {
                copies.Add((p, work));
            }

            var update = new ParamUpdate(work.view(-1), grad.contiguous().view(-1), state.State1!, state.State2,
                state.Absmax1, state.Absmax2, state.Qmap1, state.Qmap2, hyper);
            (state.IsPaged ? paged : resident).Add(update);
        }

        if (device is null)
        {
            return;
        }

        var backend = BackendOverride ?? OptimizerBackends.For(device);
        OptimizerBackends.Run(backend, Rule, resident);
        if (paged.Count > 0)
        {
            PagedStep.Run(backend, Rule, paged, Paging!.PageElements, staging);
        }

        foreach (var (param, contiguous) in copies)
        {
            param.copy_(contiguous);
        }
    }

    private static void CheckGradient(Parameter p, Tensor grad, int gi, int pi)
    {
        if (grad.is_sparse)
        {
            throw new ArgumentException(
                $"Group {gi}, parameter {pi} has a sparse gradient; 8-bit optimizers need dense gradients (use a dense embedding or convert the gradient).",
                "grad");
        }

        if (grad.dtype != p.dtype || grad.numel() != p.numel())
        {
            throw new ArgumentException(
                $"Group {gi}, parameter {pi}: gradient {grad.dtype}[{string.Join(", ", grad.shape)}] does not match the parameter {p.dtype}[{string.Join(", ", p.shape)}].",
                "grad");
        }
    }
}
