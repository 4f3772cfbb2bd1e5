using BnbDist.Examples.Llama.Corpora.RData;

namespace BnbDist.Examples.Llama.Corpora;

/// <summary>
/// Jane Austen's six novels from Debian's <c>r-cran-janeaustenr</c> (an R lazy-load database, one character vector
/// per novel, one element per line).
/// </summary>
public static class JaneAustenCorpus
{
    /// <summary>Display name in messages.</summary>
    public const string Name = "Jane Austen corpus (r-cran-janeaustenr)";

    /// <summary>The novels' object names in the database.</summary>
    public static IReadOnlyList<string> Novels { get; } =
        ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"];

    /// <summary>The index file under a data cache root.</summary>
    public static string IndexPath(string? dataRoot = null) =>
        Path.Combine(dataRoot ?? DataCache.Root, "janeaustenr", "usr", "lib", "R", "site-library", "janeaustenr", "data", "Rdata.rdx");

    /// <summary>Loads the six novels (in <see cref="Novels"/> order) from a lazy-load database.</summary>
    /// <param name="indexPath">The <c>Rdata.rdx</c> path; default: the data cache's.</param>
    /// <exception cref="CorpusNotFoundException">The database is missing.</exception>
    /// <exception cref="EmptyCorpusException">A novel holds no text.</exception>
    public static IReadOnlyList<TextDocument> Load(string? indexPath = null)
    {
        indexPath ??= IndexPath();
        if (!File.Exists(indexPath) || !File.Exists(Path.ChangeExtension(indexPath, ".rdb")))
        {
            throw new CorpusNotFoundException(Name, indexPath);
        }

        var db = LazyLoadDatabase.Open(indexPath);
        var missing = Novels.Where(n => !db.Names.Contains(n)).ToList();
        if (missing.Count > 0)
        {
            throw new RDataFormatException(indexPath, $"missing novels {string.Join(", ", missing)} (present: {string.Join(", ", db.Names)}).");
        }

        var docs = Novels.Select(n => new TextDocument(n, string.Join('\n', db.ReadStrings(n)).Trim())).ToList();
        var empty = docs.FirstOrDefault(d => d.Text.Length == 0);
        return empty is null ? docs : throw new EmptyCorpusException(Name, $"{indexPath} [{empty.Name}]");
    }
}
