namespace BnbDist.Examples.Llama;

/// <summary>
/// Where the examples keep fetched corpora and the self-made base model: <c>$BNBDIST_DATA</c> if set, else
/// <c>.data/</c> in the repository root (the nearest folder above the current directory or the app that holds
/// <c>BnbDist.sln</c>; git ignores it), else <c>.data/</c> in the current directory.
/// </summary>
public static class DataCache
{
    /// <summary>Environment variable that overrides the cache folder.</summary>
    public const string EnvironmentVariable = "BNBDIST_DATA";

    /// <summary>The command (from the repository root) that fetches the corpora into the cache.</summary>
    public const string FetchCommand = "examples/data/fetch.sh";

    /// <summary>The command (from the repository root) that pretrains and caches the base model.</summary>
    public const string PretrainCommand = "dotnet run --project examples/BnbDist.Examples.Pretrain -c Release";

    /// <summary>The cache folder (not created).</summary>
    public static string Root => ResolveRoot(Environment.GetEnvironmentVariable(EnvironmentVariable));

    /// <summary>Folder of the base model pretrained on the State of the Union corpus.</summary>
    public static string BaseModelDirectory(string? root = null) => Path.Combine(root ?? Root, "models", "sotu-base");

    internal static string ResolveRoot(string? fromEnvironment)
    {
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return Path.GetFullPath(fromEnvironment);
        }

        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "BnbDist.sln")))
                {
                    return Path.Combine(dir.FullName, ".data");
                }
            }
        }

        return Path.GetFullPath(".data");
    }
}
