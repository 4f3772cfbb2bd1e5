using BnbDist.Nn.Autograd;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Nn;

/// <summary>
/// A drop-in <c>nn.Linear</c> running LLM.int8 (bitsandbytes' <c>Linear8bitLt</c>): weights as int8 rows with per-row
/// scales (SCB), inputs quantized row-wise on the fly, outlier columns (|x| ≥ <see cref="Threshold"/>) in float16.
/// With <c>hasFp16Weights: false</c> (Hugging Face's setting) the weight is quantized once — on the move to CUDA,
/// by <see cref="Quantize"/>, or on the first forward — and frozen; with <c>true</c> the float weight trains and is
/// re-quantized every forward.
/// </summary>
public class Linear8bitLt : QuantizedLinearBase
{
    private Tensor? scb;

    /// <summary>Creates the layer with nn.Linear's initialization.</summary>
    /// <param name="inFeatures">Input features.</param>
    /// <param name="outFeatures">Output features.</param>
    /// <param name="hasBias">Whether the layer has a bias.</param>
    /// <param name="hasFp16Weights">Keep a trainable float weight (bitsandbytes' default) instead of a frozen int8 one.</param>
    /// <param name="threshold">Outlier threshold; 0 = pure int8.</param>
    /// <param name="device">Where to put the layer; CUDA quantizes right away when the weight is frozen.</param>
    public Linear8bitLt(long inFeatures, long outFeatures, bool hasBias = true, bool hasFp16Weights = true, float threshold = 0f,
        Device? device = null)
        : base(nameof(Linear8bitLt), inFeatures, outFeatures, hasBias, weightRequiresGrad: hasFp16Weights)
    {
        if (float.IsNaN(threshold) || threshold < 0)
        {
            throw new ArgumentException($"threshold must be ≥ 0; got {threshold}.", nameof(threshold));
        }

        HasFp16Weights = hasFp16Weights;
        Threshold = threshold;
        if (device is not null && device.type != DeviceType.CPU)
        {
            this.to(device);
        }
    }

    /// <summary>Whether the float weight trains (re-quantized each forward).</summary>
    public bool HasFp16Weights { get; }

    /// <summary>LLM.int8 outlier threshold.</summary>
    public float Threshold { get; }

    /// <inheritdoc/>
    public override bool IsQuantized => scb is not null;

    /// <summary>Per-row absmax of the weight (bitsandbytes' SCB), once quantized.</summary>
    public Tensor? SCB => scb;

    /// <summary>Copies an <c>nn.Linear</c> into a new (not yet quantized) layer.</summary>
    public static Linear8bitLt FromLinear(Linear linear, bool hasFp16Weights = false, float threshold = 6f)
    {
        ArgumentNullException.ThrowIfNull(linear);
        var w = linear.weight!;
        var layer = new Linear8bitLt(w.shape[1], w.shape[0], linear.bias is not null, hasFp16Weights, threshold);
        layer.SetParameter("weight", w.detach().clone(), requiresGrad: hasFp16Weights);
        if (linear.bias is not null)
        {
            layer.SetParameter("bias", linear.bias.detach().clone(), requiresGrad: true);
        }

        return layer;
    }

    /// <summary>Quantizes a frozen weight to int8 rows (no-op with fp16 weights or when already quantized).</summary>
    public void Quantize()
    {
        if (scb is not null || HasFp16Weights)
        {
            return;
        }

        var (cb, stats) = QuantizeWeight(Weight);
        scb = ModuleState.Keep(stats);
        SetParameter("weight", cb, requiresGrad: false);
    }

    /// <inheritdoc/>
    public override Tensor DenseWeight(ScalarType dtype) =>
        scb is null ? Weight.detach().to_type(dtype) : MatMul8bitLt.DequantizeWeight(Weight, scb, dtype);

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        CheckInput(input);
        if (input.numel() == 0)
        {
            var shape = input.shape.ToArray();
            shape[^1] = OutFeatures;
            return empty(shape, input.dtype, input.device);
        }

        Quantize();
        if (HasFp16Weights)
        {
            var (cb, stats) = QuantizeWeight(Weight);
            return MatMul8bitLt.Apply(input, cb, stats, Threshold, Bias, Weight);
        }

        return MatMul8bitLt.Apply(input, Weight, scb!, Threshold, Bias, null);
    }

    /// <inheritdoc/>
    public override Dictionary<string, Tensor> QuantizedStateDict(string prefix = "")
    {
        Quantize();
        var (cb, stats) = scb is null ? QuantizeWeight(Weight) : (Weight.detach(), scb);
        var result = new Dictionary<string, Tensor> { [prefix + "weight"] = cb, [prefix + "SCB"] = stats };
        if (Bias is Tensor b)
        {
            result[prefix + "bias"] = b.detach();
        }

        // bitsandbytes' weight_format: 0 = row-major ("row"); the legacy tiled layouts 1–3 are not accepted.
        result[prefix + "weight_format"] = tensor((byte)0);
        return result;
    }

    /// <inheritdoc/>
    public override IEnumerable<string> ExpectedKeys(string prefix, IReadOnlyDictionary<string, Tensor> source)
    {
        var keys = new List<string> { prefix + "weight", prefix + "SCB", prefix + "weight_format" };
        if (Bias is not null)
        {
            keys.Add(prefix + "bias");
        }

        return keys;
    }

    /// <inheritdoc/>
    public override void LoadQuantizedStateDict(IReadOnlyDictionary<string, Tensor> source, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(source);
        var w = Require(source, prefix + "weight");
        var stats = Require(source, prefix + "SCB");
        if (w.dtype != ScalarType.Int8 || !w.shape.SequenceEqual([OutFeatures, InFeatures]))
        {
            throw new StateDictException(prefix + "weight", $"must be int8 [{OutFeatures}, {InFeatures}]; got {w.dtype} [{string.Join(", ", w.shape)}].");
        }

        if (stats.dtype != ScalarType.Float32 || stats.numel() != OutFeatures)
        {
            throw new StateDictException(prefix + "SCB", $"must be float32 with {OutFeatures} elements; got {stats.dtype} with {stats.numel()}.");
        }

        if (source.TryGetValue(prefix + "weight_format", out var fmt) && (fmt.numel() != 1 || fmt.to_type(ScalarType.Int64).item<long>() != 0))
        {
            throw new StateDictException(prefix + "weight_format", "only the row-major format (0) is supported; re-save the checkpoint with bitsandbytes ≥ 0.45.");
        }

        Tensor? b = null;
        if (Bias is not null)
        {
            b = Require(source, prefix + "bias");
            if (b.numel() != OutFeatures)
            {
                throw new StateDictException(prefix + "bias", $"must have {OutFeatures} elements; got {b.numel()}.");
            }
        }
        else if (source.ContainsKey(prefix + "bias"))
        {
            throw new StateDictException(prefix + "bias", "unexpected: this layer has no bias.");
        }

        if (HasFp16Weights)
        {
            throw new StateDictException(prefix + "weight", "an int8 checkpoint needs a layer with hasFp16Weights: false.");
        }

        var device = Weight.device;
        scb = ModuleState.Keep(stats.detach().clone().to(device));
        SetParameter("weight", w.detach().clone().to(device), requiresGrad: false);
        if (b is not null)
        {
            using (no_grad())
            {
                Bias!.copy_(b);
            }
        }
    }

    /// <inheritdoc/>
    protected override bool IsQuantizedStateDict(IReadOnlyDictionary<string, Tensor> source) => source.ContainsKey("SCB");

    /// <inheritdoc/>
    protected override void AfterMove(Device device)
    {
        if (scb is not null)
        {
            scb = ModuleState.Keep(scb.to(device));
        }
        else if (device.type == DeviceType.CUDA)
        {
            Quantize();
        }
    }

    private static (Tensor CB, Tensor SCB) QuantizeWeight(Tensor weight)
    {
        using var w16 = weight.detach().to_type(ScalarType.Float16).contiguous();
        var (cb, stats, _) = Functional.Int8VectorwiseQuant(w16);
        return (cb, stats);
    }

    private static Tensor Require(IReadOnlyDictionary<string, Tensor> source, string key) =>
        source.TryGetValue(key, out var t) ? t : throw new StateDictException(key, "missing.");
}
