namespace BnbDist.Examples.Llama.Corpora.RData;

/// <summary>An R serialization stream or lazy-load database that this reader cannot read; the message names the file.</summary>
public sealed class RDataFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public RDataFormatException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner) => FilePath = path;

    /// <summary>Creates the exception.</summary>
    public RDataFormatException()
        : this("?", "invalid R data.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public RDataFormatException(string message)
        : this("?", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public RDataFormatException(string message, Exception innerException)
        : this("?", message, innerException)
    {
    }

    /// <summary>The offending file.</summary>
    public string FilePath { get; }
}
