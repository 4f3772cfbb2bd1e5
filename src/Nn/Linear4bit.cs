using BnbDist.Nn.Autograd;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Nn;

/// <summary>
/// A drop-in <c>nn.Linear</c> whose weight is stored in 4 bits (NF4 or FP4, optional double quantization), as
/// bitsandbytes' <c>Linear4bit</c>. The weight is quantized when the module moves to a CUDA device (as bitsandbytes
/// does), by <see cref="Quantize"/>, or on the first forward; after that the <c>weight</c> parameter holds the packed
/// bytes (frozen) and <see cref="QuantState"/> the statistics. Forward runs in <see cref="ComputeDType"/>; gradients
/// reach the input and the bias, never the quantized weight.
/// </summary>
public class Linear4bit : QuantizedLinearBase
{
    private readonly bool compressStatistics;
    private readonly QuantType quantType;
    private readonly int blocksize;
    private QuantState? quantState;

    /// <summary>Creates the layer with nn.Linear's initialization (on CPU, unquantized; see <paramref name="device"/>).</summary>
    /// <param name="inFeatures">Input features.</param>
    /// <param name="outFeatures">Output features.</param>
    /// <param name="hasBias">Whether the layer has a bias.</param>
    /// <param name="computeDType">dtype of the matmul; null = the input's dtype (bitsandbytes' default).</param>
    /// <param name="compressStatistics">Double quantization of the absmax (bitsandbytes' default: on).</param>
    /// <param name="quantType">NF4 or FP4 (bitsandbytes' default: FP4).</param>
    /// <param name="blocksize">Quantization block size (bitsandbytes' default: 64).</param>
    /// <param name="device">Where to put the layer; a CUDA device quantizes it right away.</param>
    public Linear4bit(long inFeatures, long outFeatures, bool hasBias = true, ScalarType? computeDType = null,
        bool compressStatistics = true, QuantType quantType = QuantType.FP4, int blocksize = 64, Device? device = null)
        : base(nameof(Linear4bit), inFeatures, outFeatures, hasBias, weightRequiresGrad: false)
    {
        if (!Backends.QuantBackendBase.IsSupportedBlocksize(blocksize))
        {
            throw new ArgumentException($"blocksize must be a power of two from 32 to 4096; got {blocksize}.", nameof(blocksize));
        }

        ComputeDType = computeDType;
        this.compressStatistics = compressStatistics;
        this.quantType = quantType;
        this.blocksize = blocksize;

        if (device is not null && device.type != DeviceType.CPU)
        {
            this.to(device);
        }
    }

    /// <summary>dtype the matmul runs in; null = the input's dtype.</summary>
    public ScalarType? ComputeDType { get; set; }

    /// <summary>NF4 or FP4.</summary>
    public QuantType QuantType => quantType;

    /// <inheritdoc/>
    public override bool IsQuantized => quantState is not null;

    /// <summary>The weight's quantization statistics, once quantized.</summary>
    public QuantState? QuantState => quantState;

    /// <summary>Copies an <c>nn.Linear</c>'s weight and bias into a new (not yet quantized) layer.</summary>
    public static Linear4bit FromLinear(Linear linear, ScalarType? computeDType = null, bool compressStatistics = true,
        QuantType quantType = QuantType.FP4, int blocksize = 64)
    {
        ArgumentNullException.ThrowIfNull(linear);
        var w = linear.weight!;
        var layer = new Linear4bit(w.shape[1], w.shape[0], linear.bias is not null, computeDType, compressStatistics, quantType, blocksize);
        using (no_grad())
        {
            layer.SetParameter("weight", w.detach().clone().to(w.device), requiresGrad: false);
            if (linear.bias is not null)
            {
                layer.SetParameter("bias", linear.bias.detach().clone(), requiresGrad: true);
            }
        }

        return layer;
    }

    /// <summary>Quantizes the weight where it is (CPU or CUDA); does nothing if already quantized.</summary>
    public void Quantize()
    {
        if (quantState is not null)
        {
            return;
        }

        var w = Weight;
        var (packed, state) = Functional.Quantize4Bit(w.detach().contiguous(), blocksize, compressStatistics, quantType);
        quantState = state.DetachFromDisposeScope();
        SetParameter("weight", packed, requiresGrad: false);
    }

    /// <inheritdoc/>
    public override Tensor DenseWeight(ScalarType dtype)
    {
        if (quantState is null)
        {
            return Weight.detach().to_type(dtype);
        }

        if (dtype is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16)
        {
            return MatMul4Bit.Dequantize(Weight, quantState, dtype);
        }

        using var f32 = MatMul4Bit.Dequantize(Weight, quantState, ScalarType.Float32);
        return f32.to_type(dtype);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        CheckInput(input);
        Quantize();
        if (Weight.device_type != input.device_type || Weight.device_index != input.device_index)
        {
            throw new ArgumentException($"input is on {input.device} but the layer is on {Weight.device}.", nameof(input));
        }

        var compute = ComputeDType ?? input.dtype;
        var x = input.dtype == compute ? input : input.to_type(compute);
        var bias = Bias;
        var b = bias is null || bias.dtype == compute ? bias : bias.to_type(compute);
        var y = MatMul4Bit.Forward(x, Weight, quantState!, b);
        return y.dtype == input.dtype ? y : y.to_type(input.dtype);
    }

    /// <inheritdoc/>
    public override Dictionary<string, Tensor> QuantizedStateDict(string prefix = "")
    {
        Quantize();
        var result = new Dictionary<string, Tensor> { [prefix + "weight"] = Weight.detach() };
        if (Bias is Tensor bias)
        {
            result[prefix + "bias"] = bias.detach();
        }

        foreach (var (k, v) in quantState!.ToDictionary())
        {
            result[prefix + "weight." + k] = v;
        }

        return result;
    }

    /// <inheritdoc/>
    public override IEnumerable<string> ExpectedKeys(string prefix, IReadOnlyDictionary<string, Tensor> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var keys = source.Keys.Where(k => k.StartsWith(prefix + "weight.", StringComparison.Ordinal)).ToList();
        keys.Add(prefix + "weight");
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
        var device = Weight.device;
        if (!source.TryGetValue(prefix + "weight", out var packed))
        {
            throw new StateDictException(prefix + "weight", "missing.");
        }

        var stats = source.Where(kv => kv.Key.StartsWith(prefix + "weight.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        QuantState state;
        try
        {
            state = QuantState.FromDictionary(stats, device);
        }
        catch (QuantStateFormatException ex)
        {
            var key = ex.Key.StartsWith(prefix + "weight.", StringComparison.Ordinal) ? ex.Key : prefix + "weight." + ex.Key;
            throw new StateDictException(key, ex.Message, ex);
        }

        if (state.Shape.Count != 2 || state.Shape[0] != OutFeatures || state.Shape[1] != InFeatures)
        {
            throw new StateDictException(prefix + "weight", $"quantized shape [{string.Join(", ", state.Shape)}] does not match this layer's [{OutFeatures}, {InFeatures}].");
        }

        if (state.QuantType != quantType)
        {
            throw new StateDictException(prefix + "weight", $"holds {state.QuantType} but this layer is {quantType}.");
        }

        if (packed.dtype != ScalarType.Byte || packed.numel() != (state.NumElements + 1) / 2)
        {
            throw new StateDictException(prefix + "weight", $"must be uint8 with {(state.NumElements + 1) / 2} elements; got {packed.dtype} with {packed.numel()}.");
        }

        Tensor? newBias = null;
        if (Bias is not null)
        {
            if (!source.TryGetValue(prefix + "bias", out var b))
            {
                throw new StateDictException(prefix + "bias", "missing.");
            }

            if (b.numel() != OutFeatures)
            {
                throw new StateDictException(prefix + "bias", $"must have {OutFeatures} elements; got {b.numel()}.");
            }

            newBias = b;
        }
        else if (source.ContainsKey(prefix + "bias"))
        {
            throw new StateDictException(prefix + "bias", "unexpected: this layer has no bias.");
        }

        quantState = state.DetachFromDisposeScope();
        SetParameter("weight", packed.detach().clone().reshape(-1, 1).to(device), requiresGrad: false);
        if (newBias is not null)
        {
            using (no_grad())
            {
                Bias!.copy_(newBias);
            }
        }
    }

    /// <inheritdoc/>
    protected override bool IsQuantizedStateDict(IReadOnlyDictionary<string, Tensor> source) =>
        // bitsandbytes' form: statistics under weight.* or a packed u8 weight; otherwise a plain nn.Linear state dict.
        source.Keys.Any(k => k.StartsWith("weight.", StringComparison.Ordinal)) ||
        (source.TryGetValue("weight", out var w) && w.dtype == ScalarType.Byte);

    /// <inheritdoc/>
    protected override void AfterMove(Device device)
    {
        if (quantState is not null)
        {
            if (quantState.Absmax.device_type != device.type || quantState.Absmax.device_index != device.index)
            {
                quantState = quantState.To(device).DetachFromDisposeScope();
            }
        }
        else if (device.type == DeviceType.CUDA)
        {
            Quantize(); // bitsandbytes quantizes on the first move to an accelerator
        }
    }

}

/// <summary><see cref="Linear4bit"/> with NF4 (bitsandbytes' <c>LinearNF4</c>).</summary>
public sealed class LinearNF4(long inFeatures, long outFeatures, bool hasBias = true, ScalarType? computeDType = null,
    bool compressStatistics = true, int blocksize = 64, Device? device = null)
    : Linear4bit(inFeatures, outFeatures, hasBias, computeDType, compressStatistics, QuantType.NF4, blocksize, device);

/// <summary><see cref="Linear4bit"/> with FP4 (bitsandbytes' <c>LinearFP4</c>).</summary>
public sealed class LinearFP4(long inFeatures, long outFeatures, bool hasBias = true, ScalarType? computeDType = null,
    bool compressStatistics = true, int blocksize = 64, Device? device = null)
    : Linear4bit(inFeatures, outFeatures, hasBias, computeDType, compressStatistics, QuantType.FP4, blocksize, device);
