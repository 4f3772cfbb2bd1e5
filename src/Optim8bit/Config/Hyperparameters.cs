namespace BnbDist.Optim8bit.Config;

/// <summary>Range checks for optimizer hyperparameters; a bad value is an ArgumentException naming it.</summary>
internal static class Hyperparameters
{
    /// <summary>A finite value ≥ 0 (lr, eps, weight decay).</summary>
    public static double CheckNonNegative(double value, string name, string? where = null) =>
        double.IsFinite(value) && value >= 0
            ? value
            : throw new ArgumentException($"{name}{Where(where)} must be finite and >= 0, got {value}.", name);

    /// <summary>A finite β in [0, 1).</summary>
    public static double CheckBeta(double value, string name, string? where = null) =>
        double.IsFinite(value) && value is >= 0 and < 1
            ? value
            : throw new ArgumentException($"{name}{Where(where)} must be finite and in [0, 1), got {value}.", name);

    private static string Where(string? where) => where is null ? string.Empty : $" ({where})";
}
