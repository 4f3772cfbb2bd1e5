using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Nn.Lora;

/// <summary>
/// A LoRA adapter around any linear layer (dense, <see cref="Linear4bit"/>, <see cref="Linear8bitLt"/>), as peft's
/// <c>LoraLayer</c>: y = base(x) + dropout(x)·Aᵀ·Bᵀ·(alpha / r). A starts kaiming-uniform (a = √5), B at zero, so the
/// wrapped layer initially computes exactly what the base does. The base is frozen; only A and B train.
/// </summary>
public sealed class LoraLinear : Module<Tensor, Tensor>, ILinearLayer
{
    private readonly Module<Tensor, Tensor> base_layer;
    private readonly Linear lora_A;
    private readonly Linear lora_B;
    private readonly Module<Tensor, Tensor> lora_dropout;

    /// <summary>Wraps <paramref name="baseLayer"/> (which must implement <see cref="ILinearLayer"/> or be an <c>nn.Linear</c>).</summary>
    /// <param name="baseLayer">The layer to adapt; its parameters are frozen.</param>
    /// <param name="r">Rank (≥ 1).</param>
    /// <param name="alpha">Scaling numerator: the update is scaled by alpha / r.</param>
    /// <param name="dropout">Dropout probability on the adapter's input (0..1).</param>
    public LoraLinear(Module<Tensor, Tensor> baseLayer, int r = 8, double alpha = 16, double dropout = 0.0)
        : base(nameof(LoraLinear))
    {
        ArgumentNullException.ThrowIfNull(baseLayer);
        if (r < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(r), r, "LoRA rank must be at least 1.");
        }

        if (dropout is < 0 or >= 1 || double.IsNaN(dropout))
        {
            throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "dropout must be in [0, 1).");
        }

        if (!double.IsFinite(alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "alpha must be finite.");
        }

        (InFeatures, OutFeatures) = LinearShape(baseLayer);
        Rank = r;
        Alpha = alpha;
        Scaling = alpha / r;
        DropoutProbability = dropout;
        base_layer = baseLayer;
        var device = baseLayer.parameters().FirstOrDefault()?.device ?? CPU;
        lora_A = Linear(InFeatures, r, hasBias: false, device: device);
        lora_B = Linear(r, OutFeatures, hasBias: false, device: device);
        using (no_grad())
        {
            lora_B.weight!.zero_();
        }

        lora_dropout = dropout > 0 ? Dropout(dropout) : Identity();
        foreach (var p in baseLayer.parameters())
        {
            p.requires_grad = false;
        }

        RegisterComponents();
    }

    /// <inheritdoc/>
    public long InFeatures { get; }

    /// <inheritdoc/>
    public long OutFeatures { get; }

    /// <summary>LoRA rank r.</summary>
    public int Rank { get; }

    /// <summary>LoRA alpha.</summary>
    public double Alpha { get; }

    /// <summary>alpha / r.</summary>
    public double Scaling { get; }

    /// <summary>Dropout probability on the adapter's input (peft's <c>lora_dropout</c>).</summary>
    public double DropoutProbability { get; }

    /// <summary>The adapted (frozen) layer.</summary>
    public Module<Tensor, Tensor> BaseLayer => base_layer;

    /// <summary>A: [r, in].</summary>
    public Parameter LoraA => lora_A.weight!;

    /// <summary>B: [out, r].</summary>
    public Parameter LoraB => lora_B.weight!;

    /// <inheritdoc/>
    public Tensor? Bias => (base_layer as ILinearLayer)?.Bias ?? (base_layer as Linear)?.bias;

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var result = base_layer.call(input);
        var a = LoraA;
        var x = input.dtype == a.dtype ? input : input.to_type(a.dtype);
        var update = lora_B.call(lora_A.call(lora_dropout.call(x))).mul(Scaling);
        return result.add(update.dtype == result.dtype ? update : update.to_type(result.dtype));
    }

    /// <summary>The adapted layer's dense weight: base weight + (alpha / r)·B·A, in <paramref name="dtype"/>.</summary>
    public Tensor DenseWeight(ScalarType dtype)
    {
        using var baseWeight = BaseDenseWeight(ScalarType.Float32);
        using var delta = LoraB.detach().to_type(ScalarType.Float32).matmul(LoraA.detach().to_type(ScalarType.Float32)).mul(Scaling);
        using var merged = baseWeight + delta;
        return merged.to_type(dtype);
    }

    /// <summary>A dense <c>nn.Linear</c> with the adapter merged in (base weight dequantized), for export or inference.</summary>
    public Linear Merge(ScalarType dtype = ScalarType.Float32)
    {
        var device = LoraA.device;
        var bias = Bias;
        var merged = Linear(InFeatures, OutFeatures, hasBias: bias is not null, device: device, dtype: dtype);
        using (no_grad())
        {
            using var w = DenseWeight(dtype);
            merged.weight!.copy_(w);
            if (bias is not null)
            {
                merged.bias!.copy_(bias);
            }
        }

        return merged;
    }

    /// <summary>The adapter's weights under peft's key names: <c>{prefix}lora_A.weight</c>, <c>{prefix}lora_B.weight</c>.</summary>
    public Dictionary<string, Tensor> AdapterStateDict(string prefix = "") => new()
    {
        [prefix + "lora_A.weight"] = LoraA.detach(),
        [prefix + "lora_B.weight"] = LoraB.detach(),
    };

    /// <summary>Loads A and B from peft-style keys; shapes must match (typed error naming the key otherwise).</summary>
    public void LoadAdapterStateDict(IReadOnlyDictionary<string, Tensor> source, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(source);
        foreach (var (key, target) in new[] { (prefix + "lora_A.weight", LoraA), (prefix + "lora_B.weight", LoraB) })
        {
            if (!source.TryGetValue(key, out var value))
            {
                throw new StateDictException(key, "missing.");
            }

            if (!value.shape.SequenceEqual(target.shape))
            {
                throw new StateDictException(key, $"shape [{string.Join(", ", value.shape)}] does not match the adapter's [{string.Join(", ", target.shape)}].");
            }

            using (no_grad())
            {
                target.copy_(value);
            }
        }
    }

    private Tensor BaseDenseWeight(ScalarType dtype) => base_layer switch
    {
        ILinearLayer l => l.DenseWeight(dtype),
        Linear l => l.weight!.detach().to_type(dtype),
        _ => throw new InvalidOperationException($"{base_layer.GetType().Name} is not a linear layer."),
    };

    internal static (long In, long Out) LinearShape(Module<Tensor, Tensor> layer) => layer switch
    {
        ILinearLayer l => (l.InFeatures, l.OutFeatures),
        Linear l => (l.weight!.shape[1], l.weight!.shape[0]),
        _ => throw new ArgumentException($"LoRA wraps linear layers (nn.Linear, Linear4bit, Linear8bitLt); got {layer.GetType().Name}.", nameof(layer)),
    };
}
