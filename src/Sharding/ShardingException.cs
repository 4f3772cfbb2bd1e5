namespace BnbDist.Sharding;

/// <summary>
/// Sharding was used wrongly or ranks disagree (different models, configs or parameters): raised on every rank, naming
/// the module or parameter, so no rank is left waiting in a collective.
/// </summary>
public sealed class ShardingException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ShardingException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>Creates the exception.</summary>
    public ShardingException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public ShardingException(string message)
        : base(message)
    {
    }
}
