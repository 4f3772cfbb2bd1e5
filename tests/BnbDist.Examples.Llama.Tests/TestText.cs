namespace BnbDist.Examples.Llama.Tests;

/// <summary>Small deterministic English-like corpora for tests that must not depend on fetched data.</summary>
internal static class TestText
{
    private static readonly string[] Words =
    [
        "the", "people", "of", "the", "United", "States", "congress", "government", "shall", "have", "power", "to",
        "lay", "and", "collect", "taxes", "duties", "imposts", "excises", "pay", "debts", "provide", "for", "common",
        "defence", "general", "welfare", "nation", "peace", "war", "commerce", "treaty", "year", "1790", "2021", "—",
    ];

    /// <summary><paramref name="count"/> documents of pseudo-random sentences (fixed seed).</summary>
    public static List<string> Documents(int count, int wordsEach = 200, int seed = 7)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => string.Join(' ', Enumerable.Range(0, wordsEach)
            .Select(i => Words[rng.Next(Words.Length)] + (i % 13 == 12 ? ".\n" : string.Empty))))];
    }
}
