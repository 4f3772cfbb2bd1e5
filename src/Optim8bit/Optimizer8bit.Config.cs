using System.Globalization;
using System.IO.Hashing;
using System.Text;
using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Config;
using BnbDist.Optim8bit.Kernels;
using BnbDist.Optim8bit.State;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit;

public abstract partial class Optimizer8bit
{
    /// <summary>
    /// A deterministic fingerprint of every parameter's effective configuration, in parameter order, for ranks of a
    /// distributed job to compare (the sharding layer does). Each parameter is described by its index, group,
    /// registered name, shape, dtype, state precision (actual once created, else what it will be) and hyperparameters;
    /// the hash (XxHash64) covers the optimizer line and every description.
    /// </summary>
    public OptimConfigFingerprint ConfigFingerprint()
    {
        var snapshot = Manager.Snapshot();
        var lines = new List<string>();
        for (var gi = 0; gi < _parameter_groups.Count; gi++)
        {
            var group = (Optimizer8bitParamGroup)_parameter_groups[gi];
            foreach (var p in group.Parameters)
            {
                var state = StateOf(p);
                var config = Effective(group, p, snapshot);
                var bits = state.IsInitialized ? (state.Is8bit ? 8 : 32) : (config.Use8bit(p.numel()) ? 8 : 32);
                lines.Add(string.Create(CultureInfo.InvariantCulture,
                    $"{state.Index} group={gi} name={snapshot.NameOf(p) ?? "-"} shape=[{string.Join(",", p.shape)}] dtype={p.dtype} state_bits={bits} lr={config.Lr:R} betas=({config.Beta1:R},{config.Beta2:R}) eps={config.Eps:R} weight_decay={config.WeightDecay:R}"));
            }
        }

        var optimizer = string.Create(CultureInfo.InvariantCulture,
            $"{GetType().Name} rule={Rule.KernelName()} optim_bits={OptimBits} min_8bit_size={MinBlockwise8bitSize} paged={Paging?.Mode.ToString() ?? "no"}");
        var hash = XxHash64.HashToUInt64(Encoding.UTF8.GetBytes(string.Join('\n', lines.Prepend(optimizer))));
        return new OptimConfigFingerprint(hash, optimizer, lines);
    }

    /// <summary>Loads state from another optimizer's <c>state_dict()</c>, checking every entry first.</summary>
    /// <exception cref="OptimizerStateMismatchException">Another optimizer type, another number of groups or parameters, or a state of the wrong form, shape or dtype (named by parameter index and key).</exception>
    public override void load_state_dict(StateDictionary state_dict)
    {
        ArgumentNullException.ThrowIfNull(state_dict);
        if (state_dict.Options.Count != _parameter_groups.Count)
        {
            throw new OptimizerStateMismatchException(null, "param_groups", $"{state_dict.Options.Count} groups saved, this optimizer has {_parameter_groups.Count}.");
        }

        if (state_dict.State.Count != states.Count)
        {
            throw new OptimizerStateMismatchException(null, "state", $"{state_dict.State.Count} parameter states saved, this optimizer has {states.Count}.");
        }

        for (var i = 0; i < states.Count; i++)
        {
            if (state_dict.State[i] is not Optimizer8bitState source || source.Rule != Rule)
            {
                throw new OptimizerStateMismatchException(i, "optimizer",
                    $"the saved state is of {Describe(state_dict.State[i])}, this optimizer's is '{Rule.KernelName()}'.");
            }
        }

        for (var g = 0; g < _parameter_groups.Count; g++)
        {
            if (!ReferenceEquals(_parameter_groups[g].Options, state_dict.Options[g]))
            {
                _parameter_groups[g].Options.LoadStateDict(state_dict.Options[g]);
            }
        }

        for (var i = 0; i < states.Count; i++)
        {
            if (!ReferenceEquals(states[i], state_dict.State[i]))
            {
                states[i].LoadStateDict(state_dict.State[i]);
            }
        }
    }

    /// <summary>The state form a parameter gets from its effective config: (8-bit?, in host memory?).</summary>
    internal (bool Use8bit, bool InHost) StateForm(Optimizer8bitState state) =>
        (Effective(state.Group, state.Parameter, Manager.Snapshot()).Use8bit(state.Parameter.numel()), StatesInHost);

    /// <summary>Refuses a saved tensor whose key, dtype or shape cannot belong to this parameter's state.</summary>
    internal void CheckTensorHeader(Optimizer8bitState state, string key, ScalarType dtype, long[] shape)
    {
        var n = state.Parameter.numel();
        var blocks = (n + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
        var (dtypes, length) = key switch
        {
            "state1" => (new[] { ScalarType.Byte, ScalarType.Float32 }, n),
            "absmax1" => ([ScalarType.Float32], blocks),
            "qmap1" => ([ScalarType.Float32], 256),
            "state2" when Rule.HasState2() => ([ScalarType.Byte, ScalarType.Float32], n),
            "absmax2" when Rule.HasState2() => ([ScalarType.Float32], blocks),
            "qmap2" when Rule.HasState2() => ([ScalarType.Float32], 256L),
            _ => throw new OptimizerStateMismatchException(state.Index, key, $"not a state key of the '{Rule.KernelName()}' optimizer."),
        };
        if (!dtypes.Contains(dtype))
        {
            throw new OptimizerStateMismatchException(state.Index, key, $"dtype {dtype}, expected {string.Join(" or ", dtypes)}.");
        }

        if (shape.Length != 1 || shape[0] != length)
        {
            throw new OptimizerStateMismatchException(state.Index, key,
                $"shape [{string.Join(", ", shape)}], expected [{length}] (the parameter has {n} elements).");
        }
    }

    /// <summary>Refuses a record that does not fit <paramref name="state"/>: another rule, another state precision, missing or extra keys, another qmap.</summary>
    internal void CheckRecord(Optimizer8bitState state, StateRecord record)
    {
        if (record.Kind != Rule.KernelName())
        {
            throw new OptimizerStateMismatchException(state.Index, "optimizer", $"state of a '{record.Kind}' optimizer, this one is '{Rule.KernelName()}'.");
        }

        if (record.Step is < 0 or > int.MaxValue)
        {
            throw new OptimizerStateMismatchException(state.Index, "step", $"{record.Step} is out of range.");
        }

        if (record.Tensors is null)
        {
            return;
        }

        var use8bit = StateForm(state).Use8bit;
        if (!record.Tensors.TryGetValue("state1", out var state1))
        {
            throw new OptimizerStateMismatchException(state.Index, "state1", "missing.");
        }

        if ((state1.dtype == ScalarType.Byte) != use8bit)
        {
            throw new OptimizerStateMismatchException(state.Index, "state1",
                $"{state1.dtype} ({(use8bit ? "32" : "8")}-bit) state saved, but this optimizer keeps {(use8bit ? "8" : "32")}-bit state for the parameter ({state.Parameter.numel()} elements, optim_bits {OptimBits}, min_8bit_size {MinBlockwise8bitSize}, overrides included).");
        }

        var expected = new List<string> { "state1" };
        if (Rule.HasState2())
        {
            expected.Add("state2");
        }

        if (use8bit)
        {
            expected.AddRange(Rule.HasState2() ? ["absmax1", "absmax2", "qmap1", "qmap2"] : ["absmax1", "qmap1"]);
        }

        foreach (var key in expected.Where(k => !record.Tensors.ContainsKey(k)))
        {
            throw new OptimizerStateMismatchException(state.Index, key, "missing.");
        }

        foreach (var (key, t) in record.Tensors)
        {
            if (!expected.Contains(key))
            {
                throw new OptimizerStateMismatchException(state.Index, key, $"not a key of {(use8bit ? "8" : "32")}-bit '{Rule.KernelName()}' state.");
            }

            CheckTensorHeader(state, key, t.dtype, t.shape);
            if (key.StartsWith("state", StringComparison.Ordinal) && t.dtype != state1.dtype)
            {
                throw new OptimizerStateMismatchException(state.Index, key, $"{t.dtype}, but state1 is {state1.dtype}.");
            }
        }

        foreach (var (key, signed) in new[] { ("qmap1", true), ("qmap2", false) })
        {
            var reference = signed ? Qmaps(CPU).Signed : Qmaps(CPU).Unsigned;
            if (record.Tensors.TryGetValue(key, out var q) && !q.cpu().eq(reference).all().item<bool>())
            {
                throw new OptimizerStateMismatchException(state.Index, key, $"not bitsandbytes' {(signed ? "signed" : "unsigned")} dynamic map.");
            }
        }
    }

    private EffectiveConfig Effective(Optimizer8bitParamGroup group, Parameter p, OverrideSnapshot snapshot)
    {
        var o = snapshot.ConfigOf(p);
        var g = group.Options;
        return new EffectiveConfig(
            o?.OptimBits ?? OptimBits,
            o?.MinBlockwise8bitSize ?? MinBlockwise8bitSize,
            o?.Lr ?? g.LearningRate!.Value,
            o?.Beta1 ?? g.Beta1!.Value,
            o?.Beta2 ?? g.Beta2!.Value,
            o?.Eps ?? g.Eps!.Value,
            o?.WeightDecay ?? g.WeightDecay!.Value);
    }

    private static string Describe(object? state) => state switch
    {
        Optimizer8bitState s => $"a '{s.Rule.KernelName()}' optimizer",
        null => "nothing",
        _ => $"another optimizer type ({state.GetType().FullName})",
    };

    /// <summary>A parameter's configuration after overrides.</summary>
    private readonly record struct EffectiveConfig(int OptimBits, int MinBlockwise8bitSize, double Lr, double Beta1, double Beta2, double Eps, double WeightDecay)
    {
        public bool Use8bit(long numel) => OptimBits == 8 && numel >= MinBlockwise8bitSize;

        public StepHyperparameters Hyperparameters(long step) =>
            new((float)Lr, (float)Beta1, (float)Beta2, (float)Eps, (float)WeightDecay, checked((int)step));
    }
}
