using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>
/// Activation checkpointing of one module, reentrant style like PyTorch's <c>torch.utils.checkpoint(use_reentrant=True)</c>
/// (TorchSharp 0.107 has no <c>torch.utils.checkpoint</c>): forward runs the module without recording a graph and keeps
/// only its input; backward runs the module's forward again with grad enabled on a detached copy of that input, back-
/// propagates the incoming gradient through the recomputed output, and returns the input's gradient. Parameters inside the
/// module (LoRA adapters) receive their gradients from that inner backward, exactly as without checkpointing.
/// </summary>
/// <remarks>
/// <para>Randomness is replayed: on the CPU the default generator's state at forward is restored for the recomputation
/// (and put back afterwards), so dropout masks match the first pass and a checkpointed run equals an unchecked one bit for
/// bit. TorchSharp cannot read the CUDA generator's state, so on CUDA each checkpointed forward first reseeds the CUDA
/// generator with a seed drawn from the CPU generator and the recomputation reseeds it with the same seed: masks are
/// replayed exactly, but the random stream differs from an unchecked run's.</para>
/// <para>TorchSharp aborts the process when a custom backward throws, so backward catches everything, leaves the gradients
/// missing and records the error; call <see cref="ThrowIfBackwardFailed"/> after <c>backward()</c>. Modules under
/// checkpointing must be deterministic apart from the RNG and must not change their parameters between forward and
/// backward.</para>
/// </remarks>
public static class ActivationCheckpoint
{
    private static Exception? backwardError;

    /// <summary>
    /// <paramref name="module"/>(<paramref name="input"/>), checkpointed when grad mode is on (a plain call otherwise). An
    /// input that needs no gradient (the output of a frozen embedding) is given one, as Hugging Face's
    /// <c>enable_input_require_grads</c> does, so that the parameters inside still train.
    /// </summary>
    public static Tensor Apply(Module<Tensor, Tensor> module, Tensor input)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(input);
        if (!is_grad_enabled())
        {
            return module.call(input);
        }

        // apply leaves an empty_like of the output (TorchSharp's cache for materializing missing gradients) in the current
        // DisposeScope, alive until that scope ends: one more layer output per checkpoint for the whole forward. With
        // materialize_grads off it is never read, so a scope of our own frees it at once and only the output leaves.
        using var scope = NewDisposeScope();
        if (input.requires_grad)
        {
            return CheckpointFunction.apply(input, module, true).MoveToOuterDisposeScope();
        }

        var x = input.detach().requires_grad_(true);
        return CheckpointFunction.apply(x, module, false).MoveToOuterDisposeScope();
    }

    /// <summary>Throws the first error a checkpointed backward caught since the last call (and clears it).</summary>
    /// <exception cref="InvalidOperationException">A recomputation failed; its gradients were left out.</exception>
    public static void ThrowIfBackwardFailed()
    {
        var error = Interlocked.Exchange(ref backwardError, null);
        if (error is not null)
        {
            throw new InvalidOperationException($"activation checkpoint: the recomputation in backward failed: {error.Message}", error);
        }
    }

    internal static void RecordBackwardError(Exception error) => Interlocked.CompareExchange(ref backwardError, error, null);

    /// <summary>apply(x, module, needInputGrad): the module's output; backward recomputes it.</summary>
    private sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "BnbDistActivationCheckpoint";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var module = (Module<Tensor, Tensor>)vars[1];
            ctx.save_for_backward([x]);
            ctx.save_data("module", module);
            ctx.save_data("need_x", (bool)vars[2]);
            ctx.save_data("rng", RngSnapshot.Capture(x.device));
            // The output cache TorchSharp keeps for missing gradients lives in the caller's DisposeScope; never use it.
            ctx.set_materialize_grads(false);
            // apply runs forward with grad mode off: no graph and no activations are kept.
            return module.call(x);
        }

        /// <summary>
        /// Input gradients this thread returned to the engine. The engine takes its own reference as soon as backward
        /// returns, but our wrapper would keep the storage alive until the GC finalizes it (on CUDA backward runs on the
        /// engine's worker thread, outside any DisposeScope): a layer's worth of gradient per checkpoint. The next backward
        /// on the same thread, which necessarily starts after the engine took its reference, disposes them.
        /// </summary>
        [ThreadStatic]
        private static List<Tensor>? returnedGradients;

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
        {
            ReleaseReturnedGradients();
            try
            {
                if (grad_output is null || grad_output.IsInvalid)
                {
                    return [null!, null!, null!];
                }

                var module = (Module<Tensor, Tensor>)ctx.get_data("module");
                var needX = (bool)ctx.get_data("need_x");
                var rng = (RngSnapshot)ctx.get_data("rng");
                Tensor? gradX;
                using (var scope = NewDisposeScope())
                {
                    var saved = ctx.get_saved_variables()[0];
                    using var replay = rng.Replay();
                    using var grad = enable_grad();
                    var x = saved.detach().requires_grad_(needX);
                    var y = module.call(x);
                    if (y.requires_grad)
                    {
                        autograd.backward([y], [grad_output]);
                    }

                    gradX = needX ? x.grad : null;
                    // Returned to the engine after this method: keep it out of the scope (the GC frees the wrapper).
                    gradX?.DetachFromDisposeScope();
                }

                if (gradX is not null)
                {
                    (returnedGradients ??= []).Add(gradX);
                }

                return [gradX!, null!, null!];
            }
#pragma warning disable CA1031 // an exception must not cross into the native engine: it aborts the process
            catch (Exception ex)
#pragma warning restore CA1031
            {
                RecordBackwardError(ex);
                return [null!, null!, null!];
            }
            finally
            {
                // Our wrapper of the engine's gradient (created outside any scope on CUDA's worker thread): drop it now
                // rather than at finalization; the engine keeps its own reference as long as it needs one.
                if (grad_output is { IsInvalid: false })
                {
                    grad_output.Dispose();
                }
            }
        }

        private static void ReleaseReturnedGradients()
        {
            if (returnedGradients is { Count: > 0 } returned)
            {
                returned.ForEach(t => t.Dispose());
                returned.Clear();
            }
        }
    }

    /// <summary>The random state a checkpointed forward ran with, replayable once per backward.</summary>
    private sealed class RngSnapshot
    {
        private readonly Tensor? cpuState;
        private readonly long? cudaSeed;

        private RngSnapshot(Tensor? cpuState, long? cudaSeed)
        {
            this.cpuState = cpuState;
            this.cudaSeed = cudaSeed;
        }

        public static RngSnapshot Capture(Device device)
        {
            if (device.type == DeviceType.CUDA)
            {
                long seed;
                using (var draw = randint(long.MaxValue, [1], dtype: ScalarType.Int64))
                {
                    seed = draw.item<long>();
                }

                cuda.manual_seed(seed);
                return new RngSnapshot(null, seed);
            }

            var state = get_rng_state();
            state.DetachFromDisposeScope();
            return new RngSnapshot(state, null);
        }

        /// <summary>Sets the forward's state; disposing puts the state of the moment back (CPU) or moves on (CUDA).</summary>
        public IDisposable Replay()
        {
            if (cudaSeed is long seed)
            {
                cuda.manual_seed(seed);
                return new Restore(() =>
                {
                    using var draw = randint(long.MaxValue, [1], dtype: ScalarType.Int64);
                    cuda.manual_seed(draw.item<long>());
                });
            }

            var now = get_rng_state();
            set_rng_state(cpuState!);
            return new Restore(() =>
            {
                set_rng_state(now);
                now.Dispose();
            });
        }

        private sealed class Restore(Action action) : IDisposable
        {
            public void Dispose() => action();
        }
    }
}
