namespace BnbDist.Optim8bit.State;

/// <summary>Optimizer state that does not fit the optimizer it is loaded into: wrong optimizer type, shape, dtype or key.</summary>
public sealed class OptimizerStateMismatchException : ArgumentException
{
    /// <summary>Creates the exception for parameter <paramref name="parameterIndex"/> (null: not about one parameter) and state key <paramref name="key"/>.</summary>
    public OptimizerStateMismatchException(int? parameterIndex, string key, string problem)
        : base(parameterIndex is null ? $"Optimizer state '{key}': {problem}" : $"Optimizer state of parameter {parameterIndex}, key '{key}': {problem}")
    {
        ParameterIndex = parameterIndex;
        Key = key;
    }

    /// <summary>Creates the exception with a message only.</summary>
    public OptimizerStateMismatchException()
        : this(null, "state", "mismatch")
    {
    }

    /// <summary>Creates the exception with a message only.</summary>
    public OptimizerStateMismatchException(string message)
        : base(message)
    {
        Key = "state";
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public OptimizerStateMismatchException(string message, Exception innerException)
        : base(message, innerException)
    {
        Key = "state";
    }

    /// <summary>Index of the parameter in the optimizer's order (groups in order, parameters in group order), if the problem is about one.</summary>
    public int? ParameterIndex { get; }

    /// <summary>The state key (state1, absmax2, step, …) or "optimizer" / "param_groups".</summary>
    public string Key { get; }
}
