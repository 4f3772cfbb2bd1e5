namespace BnbDist.Examples.Llama.Modeling;

/// <summary>A sequence longer than the model's context (<c>max_position_embeddings</c>).</summary>
public sealed class SequenceTooLongException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    public SequenceTooLongException(long length, int maxPositions)
        : base($"sequence length {length} exceeds the model's max_position_embeddings {maxPositions}; use a shorter sequence length.", "input")
    {
        Length = length;
        MaxPositions = maxPositions;
    }

    /// <summary>Creates the exception.</summary>
    public SequenceTooLongException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public SequenceTooLongException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public SequenceTooLongException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The offending length.</summary>
    public long Length { get; }

    /// <summary>The model's limit.</summary>
    public int MaxPositions { get; }

    /// <summary>Throws when <paramref name="length"/> exceeds the config's context (call before training to fail early).</summary>
    public static void ThrowIfTooLong(long length, LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (length > config.MaxPositionEmbeddings)
        {
            throw new SequenceTooLongException(length, config.MaxPositionEmbeddings);
        }
    }
}
