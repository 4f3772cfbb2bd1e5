namespace BnbDist.Examples.Llama.Corpora;

/// <summary>A corpus that is missing or holds no text; the message names the path and how to fetch it.</summary>
public class CorpusException : IOException
{
    /// <summary>Creates the exception.</summary>
    public CorpusException(string corpus, string path, string problem, Exception? inner = null)
        : base($"{corpus}: {problem} ({path}). Fetch the corpora with `{DataCache.FetchCommand}` from the repository root " +
               $"(it downloads into ${DataCache.EnvironmentVariable}, default .data/).", inner)
    {
        Corpus = corpus;
        CorpusPath = path;
    }

    /// <summary>Creates the exception.</summary>
    public CorpusException()
        : this("corpus", "?", "unavailable")
    {
    }

    /// <summary>Creates the exception.</summary>
    public CorpusException(string message)
        : base(message)
    {
        Corpus = "corpus";
        CorpusPath = "?";
    }

    /// <summary>Creates the exception.</summary>
    public CorpusException(string message, Exception innerException)
        : base(message, innerException)
    {
        Corpus = "corpus";
        CorpusPath = "?";
    }

    /// <summary>Which corpus.</summary>
    public string Corpus { get; }

    /// <summary>The file or folder that was expected.</summary>
    public string CorpusPath { get; }
}

/// <summary>The corpus files are not where they should be.</summary>
public sealed class CorpusNotFoundException : CorpusException
{
    /// <summary>Creates the exception.</summary>
    public CorpusNotFoundException(string corpus, string path)
        : base(corpus, path, "not found")
    {
    }

    /// <summary>Creates the exception.</summary>
    public CorpusNotFoundException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public CorpusNotFoundException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public CorpusNotFoundException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The corpus files exist but hold no text.</summary>
public sealed class EmptyCorpusException : CorpusException
{
    /// <summary>Creates the exception.</summary>
    public EmptyCorpusException(string corpus, string path)
        : base(corpus, path, "holds no text")
    {
    }

    /// <summary>Creates the exception.</summary>
    public EmptyCorpusException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public EmptyCorpusException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public EmptyCorpusException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
