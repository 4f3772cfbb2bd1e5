using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Examples.Llama.Modeling;

/// <summary>Llama's SwiGLU MLP: <c>down_proj(silu(gate_proj(x)) · up_proj(x))</c>.</summary>
public sealed class LlamaMlp : Module<Tensor, Tensor>
{
    private readonly Module<Tensor, Tensor> gate_proj;
    private readonly Module<Tensor, Tensor> up_proj;
    private readonly Module<Tensor, Tensor> down_proj;

    /// <summary>Creates the projections from the config.</summary>
    public LlamaMlp(LlamaConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LlamaMlp))
    {
        ArgumentNullException.ThrowIfNull(config);
        gate_proj = Linear(config.HiddenSize, config.IntermediateSize, config.MlpBias, device, dtype);
        up_proj = Linear(config.HiddenSize, config.IntermediateSize, config.MlpBias, device, dtype);
        down_proj = Linear(config.IntermediateSize, config.HiddenSize, config.MlpBias, device, dtype);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var hidden = functional.silu(gate_proj.call(input)) * up_proj.call(input);
        return down_proj.call(hidden).MoveToOuterDisposeScope();
    }
}
