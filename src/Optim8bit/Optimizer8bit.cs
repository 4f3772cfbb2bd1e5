using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using BnbDist.Optim8bit.Paging;
using BnbDist.Optim8bit.State;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace BnbDist.Optim8bit;

/// <summary>
/// The base of bitsandbytes' optimizers on TorchSharp conventions (bitsandbytes' <c>Optimizer8bit</c>): parameter
/// groups with their own lr/betas/eps/weight_decay (so TorchSharp's LR schedulers work), <c>step(closure)</c>,
/// <c>zero_grad()</c>, <c>state_dict()</c>/<c>load_state_dict</c> and TorchSharp's binary
/// <c>save_state_dict</c>/<c>load_state_dict</c>. Each parameter's state is created at its first step, 8-bit blockwise
/// (block 256, signed dynamic map for the first moment, unsigned for the second) when the effective optim_bits is 8 and
/// the parameter has at least MinBlockwise8bitSize elements, f32 otherwise; <see cref="GlobalOptimManager"/> overrides
/// apply. The step of a whole group runs in one call of the device's backend (C# kernels on the CPU).
/// </summary>
public abstract partial class Optimizer8bit : OptimizerHelper, IBetas
{
    private readonly List<Optimizer8bitState> states = [];
    private readonly Dictionary<string, (Tensor Signed, Tensor Unsigned)> qmaps = [];
    private readonly StagingBuffers staging = new();
    private readonly Optimizer8bitOptions defaults;
    private bool disposed;

    private protected Optimizer8bit(IEnumerable<Optimizer8bitParamGroup> groups, UpdateRule rule, Optimizer8bitOptions defaults,
        int optimBits, int minBlockwise8bitSize, PagingOptions? paging, GlobalOptimManager? manager)
    {
        ArgumentNullException.ThrowIfNull(groups);
        Rule = rule;
        CheckOptions(defaults, null);
        this.defaults = defaults;
        _defaults = defaults;
        OptimBits = optimBits is 8 or 32 ? optimBits : throw new ArgumentException($"optimBits must be 8 or 32, got {optimBits}.", nameof(optimBits));
        MinBlockwise8bitSize = minBlockwise8bitSize >= 0
            ? minBlockwise8bitSize
            : throw new ArgumentException($"minBlockwise8bitSize must be >= 0, got {minBlockwise8bitSize}.", nameof(minBlockwise8bitSize));
        Paging = paging?.Validated();
        Manager = manager ?? GlobalOptimManager.Instance;
        _parameter_groups = [];
        foreach (var g in groups)
        {
            AddGroup(g ?? throw new ArgumentException("A parameter group is null.", nameof(groups)));
        }
    }

    /// <summary>State precision asked for: 8 or 32 (parameters below <see cref="MinBlockwise8bitSize"/> elements keep 32-bit state either way).</summary>
    public int OptimBits { get; }

    /// <summary>bitsandbytes' <c>min_8bit_size</c>: parameters with fewer elements keep 32-bit state.</summary>
    public int MinBlockwise8bitSize { get; }

    /// <summary>How a paged optimizer keeps its states; null for a non-paged optimizer.</summary>
    public PagingOptions? Paging { get; }

    /// <summary>The registry whose per-parameter overrides this optimizer applies.</summary>
    public GlobalOptimManager Manager { get; }

    /// <summary>Every parameter's state, in parameter order (groups in order, parameters in group order).</summary>
    public IReadOnlyList<Optimizer8bitState> States => states;

    /// <summary>The parameter groups.</summary>
    public IReadOnlyList<Optimizer8bitParamGroup> Groups => _parameter_groups.Cast<Optimizer8bitParamGroup>().ToList();

    /// <summary>(β1, β2) of the first group; setting it sets every group's.</summary>
    public (double, double) Betas
    {
        get => Groups.Count == 0 ? (defaults.Beta1!.Value, defaults.Beta2!.Value) : Groups[0].Betas;
        set
        {
            foreach (var g in Groups)
            {
                g.Betas = value;
            }
        }
    }

    internal UpdateRule Rule { get; }

    /// <summary>Tests and benchmarks pick a backend here; null: by device (<see cref="OptimizerBackends"/>).</summary>
    internal IOptimizerStepBackend? BackendOverride { get; set; }

    /// <summary>Bytes of device memory used by staging buffers (paged optimizers).</summary>
    internal long StagingBytes => staging.Bytes;

    private bool StatesInHost => Paging is { Mode: PagedMode.Paged };

    /// <summary>The state of <paramref name="parameter"/>.</summary>
    /// <exception cref="ArgumentException">The parameter is not in this optimizer (TorchSharp replaces parameters when a module moves: build the optimizer after moving).</exception>
    public Optimizer8bitState StateOf(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return _state.TryGetValue(parameter.Handle, out var s)
            ? (Optimizer8bitState)s
            : throw new ArgumentException(
                "The parameter is not in this optimizer. TorchSharp replaces parameters when a module is moved or converted: construct the optimizer after .to(...).",
                nameof(parameter));
    }

    /// <summary>Adds a group: an <see cref="Optimizer8bitParamGroup"/>, or a plain ParamGroup (its learning rate is kept).</summary>
    public override void add_param_group(ParamGroup param_group)
    {
        ArgumentNullException.ThrowIfNull(param_group);
        ObjectDisposedException.ThrowIf(disposed, this);
        AddGroup(param_group as Optimizer8bitParamGroup
            ?? new Optimizer8bitParamGroup(param_group.Parameters, lr: param_group.Options?.LearningRate));
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing && !disposed)
        {
            disposed = true;
            foreach (var s in states)
            {
                s.Dispose();
            }

            foreach (var (signed, unsigned) in qmaps.Values)
            {
                signed.Dispose();
                unsigned.Dispose();
            }

            qmaps.Clear();
            staging.Dispose();
        }

        base.Dispose(disposing);
    }

    /// <summary>The optimizer's dynamic maps on <paramref name="device"/> (shared by its states there).</summary>
    internal (Tensor Signed, Tensor Unsigned) Qmaps(Device device)
    {
        var key = device.ToString();
        if (!qmaps.TryGetValue(key, out var maps))
        {
            maps = (CodeBooks.DynamicMap(true, device).DetachFromDisposeScope(), CodeBooks.DynamicMap(false, device).DetachFromDisposeScope());
            qmaps[key] = maps;
        }

        return maps;
    }

    private void AddGroup(Optimizer8bitParamGroup group)
    {
        var gi = _parameter_groups.Count;
        var parameters = group.Parameters.ToList();
        group.Parameters = parameters;
        group.Options = group.Options.WithDefaults(defaults);
        CheckOptions(group.Options, gi);
        Device? device = null;
        for (var pi = 0; pi < parameters.Count; pi++)
        {
            var p = parameters[pi] ?? throw new ArgumentException($"Group {gi}, parameter {pi} is null.", nameof(group));
            CheckParameter(p, gi, pi, ref device);
            if (_state.ContainsKey(p.Handle))
            {
                throw new ArgumentException($"Group {gi}, parameter {pi} appears in more than one parameter group.", nameof(group));
            }
        }

        foreach (var p in parameters)
        {
            var state = new Optimizer8bitState(p, this, states.Count) { Group = group };
            _state[p.Handle] = state;
            states.Add(state);
        }

        _parameter_groups.Add(group);
    }

    private static void CheckParameter(Parameter p, int gi, int pi, ref Device? device)
    {
        if (p.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            throw new ArgumentException($"Group {gi}, parameter {pi}: dtype {p.dtype}; 8-bit optimizers step float32, bfloat16 and float16 parameters.", "parameters");
        }

        device ??= p.device;
        if (p.device.type != device.type || p.device.index != device.index)
        {
            throw new ArgumentException(
                $"Group {gi} mixes devices: parameter 0 is on {device}, parameter {pi} on {p.device}. Every parameter of a group must be on one device.",
                "parameters");
        }
    }

    private static void CheckOptions(Optimizer8bitOptions o, int? gi)
    {
        var where = gi is null ? null : $"group {gi}";
        Hyperparameters.CheckNonNegative(o.LearningRate ?? double.NaN, "lr", where);
        Hyperparameters.CheckBeta(o.Beta1 ?? double.NaN, "beta1", where);
        Hyperparameters.CheckBeta(o.Beta2 ?? double.NaN, "beta2", where);
        Hyperparameters.CheckNonNegative(o.Eps ?? double.NaN, "eps", where);
        Hyperparameters.CheckNonNegative(o.WeightDecay ?? double.NaN, "weightDecay", where);
    }
}
