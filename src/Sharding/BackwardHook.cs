using BnbDist.Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Sharding;

/// <summary>
/// An identity autograd function whose backward runs a callback: TorchSharp has no module backward hooks, so FullyShard
/// threads this through a block's output (to gather its quantized weights just before the block's backward) and its
/// input (to free them once the block's backward is done).
/// </summary>
/// <remarks>
/// TorchSharp aborts the process when backward throws; a failed collective here is recorded in the launcher's error
/// file first so the job's summary names it, then rethrown.
/// </remarks>
internal sealed class BackwardHook : torch.autograd.SingleTensorFunction<BackwardHook>
{
    public override string Name => "BnbDistFsdpBackwardHook";

    /// <summary>Returns <paramref name="x"/> (as an alias) and runs <paramref name="callback"/> when its gradient arrives.</summary>
    public static Tensor Apply(Tensor x, Action callback) => apply(x, callback);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data("callback", vars[1]);
        return ((Tensor)vars[0]).alias();
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        try
        {
            ((Action)ctx.get_data("callback"))();
        }
        catch (Exception ex)
        {
            DistributedEnvironment.FromEnvironment().RecordError(ex);
            Console.Error.WriteLine($"FullyShard backward hook failed: {ex}");
            throw;
        }

        return [grad_output, null!];
    }
}
