using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Nn;

/// <summary>
/// What <see cref="Linear4bit"/> and <see cref="Linear8bitLt"/> share: state dicts in bitsandbytes' form once quantized
/// (a plain <c>nn.Linear</c> state dict before), quantize-on-CUDA moves, and access to registered parameters.
/// </summary>
public abstract class QuantizedLinearBase : Module<Tensor, Tensor>, ILinearLayer, IQuantizedModule
{
    /// <summary>Creates the module and registers nn.Linear-initialized float weight and bias.</summary>
    protected QuantizedLinearBase(string name, long inFeatures, long outFeatures, bool hasBias, bool weightRequiresGrad)
        : base(name)
    {
        if (inFeatures <= 0 || outFeatures <= 0)
        {
            throw new ArgumentException($"inFeatures and outFeatures must be positive; got {inFeatures}, {outFeatures}.", nameof(inFeatures));
        }

        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        using var init = Linear(inFeatures, outFeatures, hasBias);
        register_parameter("weight", new Parameter(init.weight!.detach().clone(), requires_grad: weightRequiresGrad));
        if (hasBias)
        {
            register_parameter("bias", new Parameter(init.bias!.detach().clone(), requires_grad: true));
        }
    }

    /// <inheritdoc/>
    public long InFeatures { get; }

    /// <inheritdoc/>
    public long OutFeatures { get; }

    /// <summary>Whether the weight is stored quantized.</summary>
    public abstract bool IsQuantized { get; }

    /// <summary>The <c>weight</c> parameter (float before quantization, quantized after).</summary>
    public Parameter Weight => Param("weight")!;

    /// <inheritdoc/>
    public Tensor? Bias => Param("bias");

    /// <inheritdoc/>
    public abstract Tensor DenseWeight(ScalarType dtype);

    /// <inheritdoc/>
    public abstract Dictionary<string, Tensor> QuantizedStateDict(string prefix = "");

    /// <inheritdoc/>
    public abstract void LoadQuantizedStateDict(IReadOnlyDictionary<string, Tensor> source, string prefix = "");

    /// <inheritdoc/>
    public abstract IEnumerable<string> ExpectedKeys(string prefix, IReadOnlyDictionary<string, Tensor> source);

    /// <inheritdoc/>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null, string? prefix = null)
    {
        destination ??= [];
        if (!IsQuantized)
        {
            return base.state_dict(destination, prefix);
        }

        foreach (var (k, v) in QuantizedStateDict(prefix is null ? string.Empty : prefix + "."))
        {
            destination.TryAdd(k, v);
        }

        return destination;
    }

    /// <inheritdoc/>
    public override (IList<string> missing_keys, IList<string> unexpected_keyes) load_state_dict(Dictionary<string, Tensor> source,
        bool strict = true, IList<string>? skip = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!IsQuantizedStateDict(source))
        {
            return base.load_state_dict(source, strict, skip);
        }

        LoadQuantizedStateDict(source);
        var unexpected = source.Keys.Except(ExpectedKeys(string.Empty, source)).ToList();
        if (strict && unexpected.Count > 0)
        {
            throw new StateDictException(unexpected[0], "unexpected key.");
        }

        return ([], unexpected);
    }

    /// <summary>Whether a module-level state dict is in the quantized (bitsandbytes) form rather than nn.Linear's.</summary>
    protected abstract bool IsQuantizedStateDict(IReadOnlyDictionary<string, Tensor> source);

    /// <summary>Called after every device move: move quantization statistics along, or quantize on the first move to CUDA.</summary>
    protected abstract void AfterMove(Device device);

    /// <inheritdoc/>
    protected override Module _to(DeviceType deviceType, int deviceIndex, bool non_blocking)
    {
        var result = base._to(deviceType, deviceIndex, non_blocking);
        AfterMove(new Device(deviceType, deviceIndex));
        return result;
    }

    /// <inheritdoc/>
    protected override Module _to(Device device, ScalarType dtype, bool non_blocking)
    {
        var result = base._to(device, dtype, non_blocking);
        AfterMove(device);
        return result;
    }

    /// <summary>Replaces a registered parameter (kept out of any open DisposeScope).</summary>
    protected void SetParameter(string name, Tensor data, bool requiresGrad) =>
        ConditionallyRegisterParameter(name, ModuleState.Keep(data, requiresGrad));

    /// <summary>Throws the standard error for an input of the wrong width or type.</summary>
    protected void CheckInput(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() < 1 || input.shape[^1] != InFeatures)
        {
            throw new ArgumentException($"input's last dimension must be {InFeatures}; got shape [{string.Join(", ", input.shape)}].", nameof(input));
        }

        if (!input.is_floating_point())
        {
            throw new ArgumentException($"input must be a float tensor; got {input.dtype}.", nameof(input));
        }
    }

    private Parameter? Param(string name) =>
        named_parameters(recurse: false).Where(p => p.name == name).Select(p => p.parameter).FirstOrDefault();
}
