using System.Globalization;

namespace BnbDist.Optim8bit.Config;

/// <summary>
/// Per-parameter configuration that overrides an optimizer's own (bitsandbytes' <c>override_config</c> dictionaries).
/// Null fields leave the optimizer's value in place. OptimBits and MinBlockwise8bitSize decide the state's form when
/// the optimizer creates it (first step or load); the hyperparameters apply on every step and win over the parameter
/// group's values, learning-rate schedulers included, as in bitsandbytes.
/// </summary>
public sealed record OptimConfigOverride
{
    /// <summary>State precision: 8 (blockwise 8-bit) or 32 (f32).</summary>
    public int? OptimBits { get; init; }

    /// <summary>Parameters with fewer elements keep 32-bit state (bitsandbytes' <c>min_8bit_size</c>).</summary>
    public int? MinBlockwise8bitSize { get; init; }

    /// <summary>Learning rate.</summary>
    public double? Lr { get; init; }

    /// <summary>β1 (Adam, Lion), momentum (SGD) or α (RMSprop).</summary>
    public double? Beta1 { get; init; }

    /// <summary>β2 (Adam, Lion).</summary>
    public double? Beta2 { get; init; }

    /// <summary>ε.</summary>
    public double? Eps { get; init; }

    /// <summary>Weight decay.</summary>
    public double? WeightDecay { get; init; }

    /// <summary>
    /// This override with one bitsandbytes key set: <c>optim_bits</c>, <c>min_8bit_size</c>, <c>lr</c>, <c>betas</c>
    /// (a (double, double) tuple or a two-element array), <c>beta1</c>, <c>beta2</c>, <c>eps</c>, <c>weight_decay</c>.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown key, or a value of the wrong type or range.</exception>
    public OptimConfigOverride With(string key, object value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        return key switch
        {
            "optim_bits" => this with { OptimBits = Bits(value) },
            "min_8bit_size" => this with { MinBlockwise8bitSize = NonNegativeInt(value, key) },
            "lr" => this with { Lr = Hyperparameters.CheckNonNegative(Number(value, key), key) },
            "betas" => WithBetas(value),
            "beta1" => this with { Beta1 = Hyperparameters.CheckBeta(Number(value, key), key) },
            "beta2" => this with { Beta2 = Hyperparameters.CheckBeta(Number(value, key), key) },
            "eps" => this with { Eps = Hyperparameters.CheckNonNegative(Number(value, key), key) },
            "weight_decay" => this with { WeightDecay = Hyperparameters.CheckNonNegative(Number(value, key), key) },
            _ => throw new ArgumentException(
                $"Unknown optimizer config key '{key}' (known: optim_bits, min_8bit_size, lr, betas, beta1, beta2, eps, weight_decay).", nameof(key)),
        };
    }

    /// <summary>This override with every non-null field of <paramref name="other"/> taking precedence.</summary>
    public OptimConfigOverride Merge(OptimConfigOverride? other) => other is null ? this : new OptimConfigOverride
    {
        OptimBits = other.OptimBits ?? OptimBits,
        MinBlockwise8bitSize = other.MinBlockwise8bitSize ?? MinBlockwise8bitSize,
        Lr = other.Lr ?? Lr,
        Beta1 = other.Beta1 ?? Beta1,
        Beta2 = other.Beta2 ?? Beta2,
        Eps = other.Eps ?? Eps,
        WeightDecay = other.WeightDecay ?? WeightDecay,
    };

    private OptimConfigOverride WithBetas(object value)
    {
        var (b1, b2) = value switch
        {
            ValueTuple<double, double> t => t,
            ValueTuple<float, float> t => (t.Item1, t.Item2),
            double[] { Length: 2 } a => (a[0], a[1]),
            float[] { Length: 2 } a => (a[0], a[1]),
            _ => throw new ArgumentException($"betas must be a (double, double) tuple or a two-element array, got {value.GetType().Name}.", nameof(value)),
        };
        return this with { Beta1 = Hyperparameters.CheckBeta(b1, "betas"), Beta2 = Hyperparameters.CheckBeta(b2, "betas") };
    }

    private static int Bits(object value)
    {
        var bits = NonNegativeInt(value, "optim_bits");
        return bits is 8 or 32 ? bits : throw new ArgumentException($"optim_bits must be 8 or 32, got {bits}.", nameof(value));
    }

    private static int NonNegativeInt(object value, string key) => value switch
    {
        int i when i >= 0 => i,
        long l when l is >= 0 and <= int.MaxValue => (int)l,
        _ => throw new ArgumentException($"{key} must be a non-negative int, got {Describe(value)}.", nameof(value)),
    };

    private static double Number(object value, string key) => value switch
    {
        double d => d,
        float f => f,
        int i => i,
        long l => l,
        _ => throw new ArgumentException($"{key} must be a number, got {Describe(value)}.", nameof(value)),
    };

    private static string Describe(object value) => string.Create(CultureInfo.InvariantCulture, $"{value} ({value.GetType().Name})");
}
