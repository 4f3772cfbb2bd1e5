using BnbDist.Optim8bit.Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.State;

/// <summary>
/// One parameter's state in an <see cref="Optimizer8bit"/>: the step count, the moment(s) — u8 codes with one f32
/// absmax per 256 elements and the dynamic maps (8-bit), or f32 (32-bit) — created at the parameter's first step with
/// the form its effective config asks for. Paged states keep State1/State2 in host memory; absmax and qmaps stay on
/// the parameter's device, as in bitsandbytes.
/// </summary>
public sealed class Optimizer8bitState : OptimizerState, IDisposable
{
    private readonly Optimizer8bit owner;

    internal Optimizer8bitState(Parameter parameter, Optimizer8bit owner, int index)
        : base(parameter)
    {
        this.owner = owner;
        Index = index;
    }

    /// <summary>Position of the parameter in the optimizer (groups in order, parameters in group order).</summary>
    public int Index { get; }

    /// <summary>Steps taken (bitsandbytes' <c>step</c>).</summary>
    public long Step { get; internal set; }

    /// <summary>Whether the state exists (the parameter has stepped, or state was loaded).</summary>
    public bool IsInitialized => State1 is not null;

    /// <summary>Whether the states are 8-bit blockwise (else f32).</summary>
    public bool Is8bit => State1 is { dtype: ScalarType.Byte };

    /// <summary>Whether State1/State2 live in host memory and are staged to the device for each step.</summary>
    public bool IsPaged { get; private set; }

    /// <summary>First moment (Adam's m; the momentum, Lion or RMSprop state), flattened.</summary>
    public Tensor? State1 { get; private set; }

    /// <summary>Second moment (Adam's v), flattened; null for 1-state rules.</summary>
    public Tensor? State2 { get; private set; }

    /// <summary>Per-block absmax of State1 (8-bit only).</summary>
    public Tensor? Absmax1 { get; private set; }

    /// <summary>Per-block absmax of State2 (8-bit Adam only).</summary>
    public Tensor? Absmax2 { get; private set; }

    /// <summary>Signed dynamic map of State1 (8-bit only; shared by the optimizer's states on one device).</summary>
    public Tensor? Qmap1 { get; private set; }

    /// <summary>Unsigned dynamic map of State2 (8-bit Adam only).</summary>
    public Tensor? Qmap2 { get; private set; }

    internal Parameter Parameter => _parameter;

    /// <summary>The update rule of the owning optimizer.</summary>
    internal UpdateRule Rule => owner.Rule;

    /// <summary>The group the parameter belongs to.</summary>
    internal Optimizer8bitParamGroup Group { get; init; } = null!;

    /// <inheritdoc/>
    public override void Initialize(OptimizerOptions options)
    {
        // bitsandbytes creates state at the first step, when overrides registered after construction are known.
    }

    /// <summary>Creates zeroed state of the given form (any old state is released).</summary>
    internal void Allocate(bool use8bit, bool paged, UpdateRule rule)
    {
        Release();
        var n = _parameter.numel();
        var device = _parameter.device;
        var stateDevice = paged ? CPU : device;
        var pin = paged && device.type == DeviceType.CUDA;
        var dtype = use8bit ? ScalarType.Byte : ScalarType.Float32;
        State1 = Zeros(n, dtype, stateDevice, pin);
        State2 = rule.HasState2() ? Zeros(n, dtype, stateDevice, pin) : null;
        if (use8bit)
        {
            var blocks = (n + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
            Absmax1 = Zeros(blocks, ScalarType.Float32, device, false);
            Absmax2 = rule.HasState2() ? Zeros(blocks, ScalarType.Float32, device, false) : null;
            (Qmap1, Qmap2) = owner.Qmaps(device);
            Qmap2 = rule.HasState2() ? Qmap2 : null;
        }

        IsPaged = paged;
    }

    /// <summary>
    /// This parameter's state tensors under bitsandbytes' keys (<c>state1</c>, <c>state2</c>, <c>absmax1</c>,
    /// <c>absmax2</c>, <c>qmap1</c>, <c>qmap2</c>): the live tensors, not copies; empty before the first step.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> StateTensors() =>
        ToRecord(Rule.KernelName()).Tensors ?? new Dictionary<string, Tensor>(StringComparer.Ordinal);

    /// <summary>
    /// Replaces this state, as a checkpoint restore does: allocates it in this optimizer's form for the parameter and
    /// copies <paramref name="tensors"/> (keys as <see cref="StateTensors"/>; null = not stepped yet).
    /// </summary>
    /// <exception cref="OptimizerStateMismatchException">A tensor is missing or does not fit (names the key).</exception>
    public void LoadStateTensors(long step, IReadOnlyDictionary<string, Tensor>? tensors) =>
        Apply(new StateRecord(Rule.KernelName(), step, tensors));

    /// <summary>The state under bitsandbytes' keys (live tensors, no copies).</summary>
    internal StateRecord ToRecord(string kind)
    {
        if (!IsInitialized)
        {
            return new StateRecord(kind, Step, null);
        }

        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal) { ["state1"] = State1! };
        Put(tensors, "state2", State2);
        Put(tensors, "absmax1", Absmax1);
        Put(tensors, "absmax2", Absmax2);
        Put(tensors, "qmap1", Qmap1);
        Put(tensors, "qmap2", Qmap2);
        return new StateRecord(kind, Step, tensors);
    }

    /// <summary>Replaces this state by <paramref name="record"/>'s values after checking that they fit this optimizer and parameter.</summary>
    internal void Apply(StateRecord record)
    {
        owner.CheckRecord(this, record);
        if (record.Tensors is null)
        {
            Release();
            Step = record.Step;
            return;
        }

        var (use8bit, paged) = owner.StateForm(this);
        Allocate(use8bit, paged, owner.Rule);
        using (no_grad())
        {
            State1!.copy_(record.Tensors["state1"]);
            State2?.copy_(record.Tensors["state2"]);
            Absmax1?.copy_(record.Tensors["absmax1"]);
            Absmax2?.copy_(record.Tensors["absmax2"]);
        }

        Step = record.Step;
    }

    /// <inheritdoc/>
    public override void SaveStateDict(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ToRecord(Rule.KernelName()).Write(writer);
    }

    /// <inheritdoc/>
    public override void LoadStateDict(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var record = StateRecord.Read(reader, Index, (key, dtype, shape) => owner.CheckTensorHeader(this, key, dtype, shape));
        try
        {
            Apply(record);
        }
        finally
        {
            foreach (var t in record.Tensors?.Values ?? [])
            {
                t.Dispose();
            }
        }
    }

    /// <inheritdoc/>
    public override void LoadStateDict(OptimizerState source)
    {
        if (source is not Optimizer8bitState other)
        {
            throw new OptimizerStateMismatchException(Index, "optimizer", $"the state is a {source?.GetType().Name ?? "null"}, not an Optimizer8bitState.");
        }

        Apply(other.ToRecord(other.Rule.KernelName()));
    }

    /// <inheritdoc/>
    public override bool ApproximatelyEquals(OptimizerState other) =>
        other is Optimizer8bitState o && o.Step == Step && o.IsInitialized == IsInitialized &&
        (!IsInitialized || ToRecord(string.Empty).Tensors!.All(kv =>
            o.ToRecord(string.Empty).Tensors!.TryGetValue(kv.Key, out var t) && t.cpu().equal(kv.Value.cpu()).all().item<bool>()));

    /// <summary>Moves resident state to <paramref name="device"/>; paged State1/State2 stay in host memory.</summary>
    public override void to(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!IsPaged)
        {
            State1 = Move(State1, device);
            State2 = Move(State2, device);
        }

        Absmax1 = Move(Absmax1, device);
        Absmax2 = Move(Absmax2, device);
        if (Qmap1 is not null)
        {
            (Qmap1, Qmap2) = owner.Qmaps(device);
            Qmap2 = State2 is null ? null : Qmap2;
        }
    }

    /// <summary>Releases the state tensors (the shared qmaps belong to the optimizer).</summary>
    public void Dispose() => Release();

    private void Release()
    {
        State1?.Dispose();
        State2?.Dispose();
        Absmax1?.Dispose();
        Absmax2?.Dispose();
        State1 = State2 = Absmax1 = Absmax2 = Qmap1 = Qmap2 = null;
        IsPaged = false;
    }

    private static void Put(Dictionary<string, Tensor> map, string key, Tensor? t)
    {
        if (t is not null)
        {
            map[key] = t;
        }
    }

    private static Tensor Zeros(long n, ScalarType dtype, Device device, bool pin)
    {
        var t = zeros(n, dtype, device);
        if (pin)
        {
            var pinned = t.pin_memory();
            t.Dispose();
            t = pinned;
        }

        return t.DetachFromDisposeScope();
    }

    private static Tensor? Move(Tensor? t, Device device)
    {
        if (t is null || (t.device.type == device.type && t.device.index == device.index))
        {
            return t;
        }

        var moved = t.to(device).DetachFromDisposeScope();
        t.Dispose();
        return moved;
    }
}
