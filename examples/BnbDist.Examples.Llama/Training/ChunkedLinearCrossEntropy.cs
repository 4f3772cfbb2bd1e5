using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Training;

/// <summary>
/// The causal LM loss straight from the last hidden states and a frozen output head, without ever holding the full
/// [tokens, vocab] logits: rows are processed in chunks, each chunk's logits are made in the activations' dtype, and the
/// log-softmax, the loss and its gradient (softmax minus one-hot) are computed in fp32, one chunk at a time. Because the
/// head is frozen (QLoRA), the gradient with respect to the hidden states is finished in forward; backward only scales
/// it. Same value as <see cref="CausalLm.Loss"/> on <c>head(hidden)</c> up to the logits' rounding, at a fraction of the
/// memory (a [2048, 32000] fp32 logits tensor, its log-softmax and their gradients are 1 GiB).
/// </summary>
public static class ChunkedLinearCrossEntropy
{
    /// <summary>Rows per chunk: 512 × 32000 fp32 logits are 64 MiB.</summary>
    public const int DefaultChunkRows = 512;

    /// <summary>Mean next-token cross-entropy of <c>hidden·headᵀ</c> [B, T, V] against ids [B, T] (B·(T-1) predictions).</summary>
    /// <param name="hidden">Final (normed) hidden states [B, T, H].</param>
    /// <param name="headWeight">The output head's weight [V, H]; must not require grad.</param>
    /// <param name="ids">Token ids [B, T] (int64).</param>
    /// <param name="chunkRows">Prediction rows per chunk.</param>
    /// <exception cref="ArgumentException">Shapes disagree, or the head requires grad (its gradient is not computed).</exception>
    public static Tensor Loss(Tensor hidden, Tensor headWeight, Tensor ids, int chunkRows = DefaultChunkRows)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(headWeight);
        ArgumentNullException.ThrowIfNull(ids);
        if (hidden.dim() != 3 || ids.dim() != 2 || hidden.shape[0] != ids.shape[0] || hidden.shape[1] != ids.shape[1] || ids.shape[1] < 2)
        {
            throw new ArgumentException($"hidden [{string.Join(", ", hidden.shape)}] does not match ids [{string.Join(", ", ids.shape)}] as [B, T, H] and [B, T] with T ≥ 2.", nameof(hidden));
        }

        if (headWeight.dim() != 2 || headWeight.shape[1] != hidden.shape[2])
        {
            throw new ArgumentException($"head weight [{string.Join(", ", headWeight.shape)}] is not [vocab, {hidden.shape[2]}].", nameof(headWeight));
        }

        if (headWeight.requires_grad)
        {
            throw new ArgumentException("the output head must be frozen: this loss computes no gradient for it.", nameof(headWeight));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(chunkRows, 1);
        using var scope = NewDisposeScope();
        var t = hidden.shape[1];
        var rows = hidden.narrow(1, 0, t - 1).reshape(-1, hidden.shape[2]);
        var targets = ids.narrow(1, 1, t - 1).reshape(-1);
        var weight = headWeight.dtype == rows.dtype ? headWeight : headWeight.to_type(rows.dtype);
        return Function.apply(rows, weight.detach(), targets, chunkRows).MoveToOuterDisposeScope();
    }

    /// <summary>apply(rows [N, H], weight [V, H], targets [N], chunkRows): the mean loss (fp32 scalar).</summary>
    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "BnbDistChunkedLinearCrossEntropy";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var rows = (Tensor)vars[0];
            var weight = (Tensor)vars[1];
            var targets = (Tensor)vars[2];
            var chunk = (int)vars[3];
            var n = rows.shape[0];
            var needGrad = rows.requires_grad;
            using var scope = NewDisposeScope();
            var total = zeros(1, ScalarType.Float32, rows.device);
            var grad = needGrad ? empty_like(rows) : null;
            for (long start = 0; start < n; start += chunk)
            {
                using var step = NewDisposeScope();
                var len = Math.Min(chunk, n - start);
                var h = rows.narrow(0, start, len);
                var tgt = targets.narrow(0, start, len).unsqueeze(1);
                var logits = nn.functional.linear(h, weight).to_type(ScalarType.Float32);
                var lse = logits.logsumexp(1, keepdim: true);
                total.add_((lse - logits.gather(1, tgt)).sum());
                if (grad is not null)
                {
                    // d(mean loss)/d(logits) = (softmax - onehot) / n, in fp32; then to the rows through the head.
                    var p = logits.sub_(lse).exp_();
                    p.scatter_add_(1, tgt, full([len, 1], -1f, ScalarType.Float32, rows.device));
                    p.div_(n);
                    grad.narrow(0, start, len).copy_(p.to_type(rows.dtype).matmul(weight));
                }
            }

            ctx.save_for_backward(grad is null ? [] : [grad]);
            ctx.save_data("need_grad", needGrad);
            var loss = total.div_(n).squeeze();
            grad?.MoveToOuterDisposeScope();
            return loss.MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
        {
            // Arithmetic only (TorchSharp aborts on an exception here): the gradient was finished in forward.
            Tensor? gradRows = null;
            if ((bool)ctx.get_data("need_grad") && grad_output is not null && !grad_output.IsInvalid)
            {
                var saved = ctx.get_saved_variables()[0];
                gradRows = saved.mul(grad_output.to_type(saved.dtype));
            }

            return [gradRows!, null!, null!, null!];
        }
    }
}
