namespace BnbDist.Examples.Llama.Modeling;

/// <summary>A tokenizer that does not belong to the model (vocabulary too large, or a different fingerprint).</summary>
public sealed class TokenizerMismatchException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public TokenizerMismatchException(string tokenizerPath, string configPath, string problem)
        : base($"tokenizer {tokenizerPath} does not match the model ({configPath}): {problem}")
    {
        TokenizerPath = tokenizerPath;
        ConfigPath = configPath;
    }

    /// <summary>Creates the exception.</summary>
    public TokenizerMismatchException()
        : this("?", "?", "mismatch.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public TokenizerMismatchException(string message)
        : base(message)
    {
        TokenizerPath = ConfigPath = "?";
    }

    /// <summary>Creates the exception.</summary>
    public TokenizerMismatchException(string message, Exception innerException)
        : base(message, innerException)
    {
        TokenizerPath = ConfigPath = "?";
    }

    /// <summary>The tokenizer file.</summary>
    public string TokenizerPath { get; }

    /// <summary>The model's config file.</summary>
    public string ConfigPath { get; }
}
