using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Nn.Autograd;

/// <summary>
/// y = x·dequant(W)ᵀ + b with a frozen 4-bit weight (bitsandbytes' MatMul4Bit). Only a reference to the packed bytes is kept for
/// backward, which dequantizes again: no full-precision copy of the weight lives between forward and backward.
/// Gradients flow to x and b, never to the quantized weight.
/// </summary>
/// <remarks>
/// TorchSharp aborts the process if <c>backward</c> throws, so every check happens in <c>forward</c> (or before
/// <see cref="Apply"/>); <c>backward</c> only does arithmetic. Arguments to <c>apply</c>: x, packed, state, bias.
/// </remarks>
internal sealed class MatMul4Bit : torch.autograd.SingleTensorFunction<MatMul4Bit>
{
    public override string Name => "BnbDistMatMul4Bit";

    /// <summary>Runs the op, recording it for autograd when grad mode is on and x or bias needs a gradient.</summary>
    public static Tensor Apply(Tensor x, Tensor packed, QuantState state, Tensor? bias) =>
        bias is null ? apply(x, packed, state) : apply(x, packed, state, bias);

    /// <summary>
    /// The Linear4bit forward: on CUDA, for a single input row (product of the leading dimensions 1) when no gradient is needed
    /// (inference, decode), the 4-bit GEMV kernel, which reads the packed weight once and never dequantizes it (as bitsandbytes'
    /// <c>matmul_4bit</c> does); otherwise <see cref="Apply"/> (dequantize + matmul, with autograd).
    /// </summary>
    public static Tensor Forward(Tensor x, Tensor packed, QuantState state, Tensor? bias)
    {
        if (!UsesGemv(x, state, bias))
        {
            return Apply(x, packed, state, bias);
        }

        var y = Functional.Gemv4Bit(x, packed, state);
        if (bias is not null)
        {
            y.add_(bias);
        }

        return y;
    }

    /// <summary>Whether <see cref="Forward"/> takes the GEMV kernel for these arguments.</summary>
    internal static bool UsesGemv(Tensor x, QuantState state, Tensor? bias) =>
        x.device_type == DeviceType.CUDA && x.dim() >= 1 && x.shape[^1] > 0 && x.numel() == x.shape[^1] && state.Shape.Count == 2 &&
        !(torch.is_grad_enabled() && (x.requires_grad || (bias?.requires_grad ?? false)));

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var packed = (Tensor)vars[1];
        var state = (QuantState)vars[2];
        var bias = vars.Length > 3 ? (Tensor)vars[3] : null;
        // The packed weight is read again at backward time rather than saved: a frozen weight does not change, and
        // sharding may free its storage between forward and backward and gather it back (saved tensors forbid that).
        ctx.save_data("packed", new WeightRef(packed));
        ctx.save_data("state", state);
        ctx.save_data("need_x", x.requires_grad);
        ctx.save_data("need_bias", bias?.requires_grad ?? false);
        ctx.save_data("has_bias", bias is not null);
        using var w = Dequantize(packed, state, x.dtype);
        return nn.functional.linear(x, w, bias);
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        var packed = ((WeightRef)ctx.get_data("packed")).Tensor;
        var state = (QuantState)ctx.get_data("state");
        Tensor? gradX = null, gradBias = null;
        if ((bool)ctx.get_data("need_x"))
        {
            using var w = Dequantize(packed, state, grad_output.dtype);
            gradX = grad_output.matmul(w);
        }

        if ((bool)ctx.get_data("need_bias"))
        {
            var dims = Enumerable.Range(0, (int)grad_output.dim() - 1).Select(d => (long)d).ToArray();
            gradBias = dims.Length == 0 ? grad_output.clone() : grad_output.sum(dims);
        }

        // One entry per apply argument: x, packed, state (not a tensor), bias.
        var grads = new List<Tensor> { gradX!, null!, null! };
        if ((bool)ctx.get_data("has_bias"))
        {
            grads.Add(gradBias!);
        }

        return grads;
    }

    /// <summary>Holds the weight for backward without making it a saved (version-checked) tensor.</summary>
    private sealed record WeightRef(Tensor Tensor);

    /// <summary>The weight in <paramref name="dtype"/>, dequantized straight into that dtype (one rounding from f32).</summary>
    internal static Tensor Dequantize(Tensor packed, QuantState state, ScalarType dtype)
    {
        var w = empty([.. state.Shape], dtype, packed.device);
        Functional.Dequantize4Bit(packed, state, w);
        return w;
    }
}
