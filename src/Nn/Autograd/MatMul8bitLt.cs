using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Nn.Autograd;

/// <summary>
/// LLM.int8 matmul (bitsandbytes' MatMul8bitLt): the input is quantized row-wise to int8 in float16; columns with an
/// outlier (|x| ≥ threshold) go through a float16 matmul against the dequantized weight columns instead; the int8
/// product is dequantized with the row and column statistics. Gradients reach the input and bias (and the float
/// weight when it is trainable); the int8 weight never gets one.
/// </summary>
/// <remarks>apply arguments: x, CB (int8 [out, in]), SCB (f32 [out]), threshold (float), bias?, trainable weight?.</remarks>
internal sealed class MatMul8bitLt : torch.autograd.SingleTensorFunction<MatMul8bitLt>
{
    public override string Name => "BnbDistMatMul8bitLt";

    public static Tensor Apply(Tensor x, Tensor cb, Tensor scb, float threshold, Tensor? bias, Tensor? weight)
    {
        var args = new List<object> { x, cb, scb, threshold, bias ?? (object)"no-bias", weight ?? (object)"no-weight" };
        return apply([.. args]);
    }

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var cb = (Tensor)vars[1];
        var scb = (Tensor)vars[2];
        var threshold = (float)vars[3];
        var bias = vars[4] as Tensor;
        var weight = vars[5] as Tensor;

        var inFeatures = x.shape[^1];
        var rows = x.numel() / inFeatures;
        using var a16 = x.reshape(rows, inFeatures).to_type(ScalarType.Float16);
        var (ca, sca, cols) = Functional.Int8VectorwiseQuant(a16, threshold);
        using var caDispose = ca;
        using var scaDispose = sca;
        using var out32 = Functional.Int8LinearMatmul(ca, cb);
        var output = Functional.Int8MmDequant(out32, sca, scb, bias?.to_type(ScalarType.Float16));
        if (cols is not null && cols.numel() > 0)
        {
            // Outlier columns: original fp16 activations times the dequantized int8 weight columns (rounded to fp16, as
            // bitsandbytes does), added to the int8 result with one rounding: cuBLAS's addmm accumulates in f32.
            using var subA = a16.index_select(1, cols).to_type(ScalarType.Float32);
            using var subBHalf = DequantizeWeight(cb.index_select(1, cols), scb, ScalarType.Float16);
            using var subB = subBHalf.to_type(ScalarType.Float32);
            using var sum = output.to_type(ScalarType.Float32).addmm(subA, subB.t());
            output.Dispose();
            output = sum.to_type(ScalarType.Float16);
        }

        cols?.Dispose();
        if (weight is null)
        {
            // A frozen int8 weight is read again at backward time rather than saved (as MatMul4Bit does): it does not
            // change, and sharding may free its storage between forward and backward and gather it back.
            ctx.save_data("frozen", new WeightRef(cb, scb));
            ctx.save_for_backward([x]);
        }
        else
        {
            ctx.save_data("frozen", "no"); // the weight is re-quantized per forward: these CB/SCB are this call's own
            ctx.save_for_backward([cb, scb, x]);
        }

        ctx.save_data("need_x", x.requires_grad);
        ctx.save_data("need_bias", bias?.requires_grad ?? false);
        ctx.save_data("need_weight", weight?.requires_grad ?? false);
        var shape = x.shape.ToArray();
        shape[^1] = cb.shape[0];
        return output.to_type(x.dtype).reshape(shape);
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        var (cb, scb, x) = ctx.get_data("frozen") is WeightRef frozen ? (frozen.CB, frozen.SCB, saved[0]) : (saved[0], saved[1], saved[2]);
        Tensor? gradX = null, gradBias = null, gradW = null;
        var outFeatures = grad_output.shape[^1];
        using var g2 = grad_output.reshape(-1, outFeatures);
        if ((bool)ctx.get_data("need_x"))
        {
            using var w = DequantizeWeight(cb, scb, grad_output.dtype);
            gradX = grad_output.matmul(w);
        }

        if ((bool)ctx.get_data("need_bias"))
        {
            gradBias = g2.sum(0L); // 0L: a literal 0 would convert to the ScalarType overload
        }

        if ((bool)ctx.get_data("need_weight"))
        {
            using var x2 = x.reshape(-1, x.shape[^1]).to_type(grad_output.dtype);
            gradW = g2.t().matmul(x2);
        }

        // One entry per apply argument: x, CB, SCB, threshold, bias, weight.
        return [gradX!, null!, null!, null!, gradBias!, gradW!];
    }

    private sealed record WeightRef(Tensor CB, Tensor SCB);

    /// <summary>CB·SCB·(1/127) per output row, in <paramref name="dtype"/> (bitsandbytes' int8_vectorwise_dequant, same rounding order).</summary>
    internal static Tensor DequantizeWeight(Tensor cb, Tensor scb, ScalarType dtype)
    {
        using var w = Functional.Int8VectorwiseDequant(cb, scb);
        return w.to_type(dtype);
    }
}
