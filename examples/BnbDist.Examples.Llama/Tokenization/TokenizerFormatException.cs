namespace BnbDist.Examples.Llama.Tokenization;

/// <summary>A tokenizer file that is not a byte-level BPE this reader understands; the message names the file.</summary>
public sealed class TokenizerFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public TokenizerFormatException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner) => FilePath = path;

    /// <summary>Creates the exception.</summary>
    public TokenizerFormatException()
        : this("?", "invalid tokenizer file.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public TokenizerFormatException(string message)
        : this("?", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public TokenizerFormatException(string message, Exception innerException)
        : this("?", message, innerException)
    {
    }

    /// <summary>The offending file.</summary>
    public string FilePath { get; }
}
