using TorchSharp.Modules;
using static TorchSharp.torch.nn;

namespace BnbDist.Optim8bit.Config;

/// <summary>
/// bitsandbytes' <c>GlobalOptimManager</c>: a per-process registry of per-parameter optimizer configuration (for example
/// <c>optim_bits=32</c> for embeddings, or another lr or betas), applied by every optimizer of this library when it
/// creates or steps a parameter's state. <see cref="Instance"/> is the process-wide one that optimizers use by default;
/// <c>new GlobalOptimManager()</c> gives an isolated one (tests, or several models in one process).
/// </summary>
/// <remarks>
/// Overrides are keyed three ways, later ones winning field by field: by dotted parameter name (resolved through the
/// modules given to <see cref="RegisterParameters"/>), by module and attribute (<see cref="RegisterModuleOverride(Module, string, OptimConfigOverride)"/>),
/// and by the <see cref="TorchSharp.Modules.Parameter"/> object itself (<see cref="OverrideConfig(Parameter, string, object)"/>), which
/// needs no registration: a sharding layer can force the state form of 1-D shard parameters that no module owns.
/// Names and module overrides are resolved when an optimizer looks (first step, load or fingerprint), so they follow
/// parameters that TorchSharp replaced when the model was moved to another device; parameter-object overrides must be
/// made on the parameters the optimizer holds.
/// </remarks>
public sealed class GlobalOptimManager
{
    private static readonly Lazy<GlobalOptimManager> Singleton = new(() => new GlobalOptimManager());

    private readonly Lock gate = new();
    private readonly Dictionary<IntPtr, OptimConfigOverride> byParameter = [];
    private readonly Dictionary<string, OptimConfigOverride> byName = new(StringComparer.Ordinal);
    private readonly List<(Module Module, string Prefix)> modules = [];
    private readonly List<(Module Module, string Name, OptimConfigOverride Config)> moduleOverrides = [];

    /// <summary>The process-wide manager (bitsandbytes' <c>GlobalOptimManager.get_instance()</c>).</summary>
    public static GlobalOptimManager Instance => Singleton.Value;

    /// <summary>The process-wide manager, by bitsandbytes' name.</summary>
    public static GlobalOptimManager GetInstance() => Instance;

    /// <summary>Registers the parameters of <paramref name="module"/> under their dotted names (prefixed by <paramref name="prefix"/>).</summary>
    public void RegisterParameters(Module module, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(prefix);
        lock (gate)
        {
            modules.Add((module, prefix));
        }
    }

    /// <summary>Overrides the config of <paramref name="module"/>'s parameter <paramref name="parameterName"/> (as bitsandbytes' Embedding does with <c>optim_bits=32</c>).</summary>
    public void RegisterModuleOverride(Module module, string parameterName, OptimConfigOverride config)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentException.ThrowIfNullOrEmpty(parameterName);
        ArgumentNullException.ThrowIfNull(config);
        if (!module.has_parameter(parameterName))
        {
            throw new ArgumentException($"The module has no parameter '{parameterName}'.", nameof(parameterName));
        }

        lock (gate)
        {
            moduleOverrides.Add((module, parameterName, config));
        }
    }

    /// <summary>Overrides one key of a module parameter's config (keys as in <see cref="OptimConfigOverride.With"/>).</summary>
    public void RegisterModuleOverride(Module module, string parameterName, string key, object value) =>
        RegisterModuleOverride(module, parameterName, new OptimConfigOverride().With(key, value));

    /// <summary>Overrides one key of <paramref name="parameter"/>'s config (bitsandbytes' <c>override_config(p, key, value)</c>).</summary>
    public void OverrideConfig(Parameter parameter, string key, object value)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        var change = new OptimConfigOverride().With(key, value);
        Update(parameter, change);
    }

    /// <summary>Overrides one key for each parameter (each gets its own entry: bitsandbytes #2029 shared one dict).</summary>
    public void OverrideConfig(IEnumerable<Parameter> parameters, string key, object value)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var change = new OptimConfigOverride().With(key, value);
        foreach (var p in parameters)
        {
            Update(p ?? throw new ArgumentException("A parameter is null.", nameof(parameters)), change);
        }
    }

    /// <summary>Overrides several keys of <paramref name="parameter"/>'s config (bitsandbytes' <c>key_value_dict</c>).</summary>
    public void OverrideConfig(Parameter parameter, IReadOnlyDictionary<string, object> keyValues)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        ArgumentNullException.ThrowIfNull(keyValues);
        var change = keyValues.Aggregate(new OptimConfigOverride(), (c, kv) => c.With(kv.Key, kv.Value));
        Update(parameter, change);
    }

    /// <summary>Merges a typed override into <paramref name="parameter"/>'s config.</summary>
    public void OverrideConfig(Parameter parameter, OptimConfigOverride config)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        ArgumentNullException.ThrowIfNull(config);
        Update(parameter, config);
    }

    /// <summary>Overrides one key of the parameter registered (through <see cref="RegisterParameters"/>) as <paramref name="parameterName"/>.</summary>
    public void OverrideConfig(string parameterName, string key, object value)
    {
        ArgumentException.ThrowIfNullOrEmpty(parameterName);
        var change = new OptimConfigOverride().With(key, value);
        lock (gate)
        {
            byName[parameterName] = byName.TryGetValue(parameterName, out var old) ? old.Merge(change) : change;
        }
    }

    /// <summary>Forgets every registration and override.</summary>
    public void Clear()
    {
        lock (gate)
        {
            byParameter.Clear();
            byName.Clear();
            modules.Clear();
            moduleOverrides.Clear();
        }
    }

    /// <summary>Names and overrides of the parameters as they are now (one walk over the registered modules).</summary>
    internal OverrideSnapshot Snapshot()
    {
        lock (gate)
        {
            var names = new Dictionary<IntPtr, string>();
            var configs = new Dictionary<IntPtr, OptimConfigOverride>();
            foreach (var (module, prefix) in modules)
            {
                foreach (var (name, p) in module.named_parameters())
                {
                    var full = prefix.Length == 0 ? name : $"{prefix}.{name}";
                    names.TryAdd(p.Handle, full);
                    if (byName.TryGetValue(full, out var c))
                    {
                        Add(configs, p.Handle, c);
                    }
                }
            }

            foreach (var (module, name, config) in moduleOverrides)
            {
                // The module may have replaced the parameter since (a move); it is resolved by name now.
                if (module.get_parameter(name) is { } p)
                {
                    Add(configs, p.Handle, config);
                }
            }

            foreach (var (handle, config) in byParameter)
            {
                Add(configs, handle, config);
            }

            return new OverrideSnapshot(names, configs);
        }
    }

    private void Update(Parameter parameter, OptimConfigOverride change)
    {
        lock (gate)
        {
            Add(byParameter, parameter.Handle, change);
        }
    }

    private static void Add(Dictionary<IntPtr, OptimConfigOverride> map, IntPtr key, OptimConfigOverride change) =>
        map[key] = map.TryGetValue(key, out var old) ? old.Merge(change) : change;
}

/// <summary>What a <see cref="GlobalOptimManager"/> knows about each parameter at one moment.</summary>
internal sealed class OverrideSnapshot(Dictionary<IntPtr, string> names, Dictionary<IntPtr, OptimConfigOverride> configs)
{
    /// <summary>The registered dotted name of <paramref name="p"/>, if any.</summary>
    public string? NameOf(Parameter p) => names.GetValueOrDefault(p.Handle);

    /// <summary>The merged override of <paramref name="p"/>, if any.</summary>
    public OptimConfigOverride? ConfigOf(Parameter p) => configs.GetValueOrDefault(p.Handle);
}
