namespace BnbDist.Examples.Llama.Corpora;

/// <summary>One document of a corpus (a novel, an address).</summary>
/// <param name="Name">Stable name (object or file name).</param>
/// <param name="Text">The text, lines joined with <c>\n</c>.</param>
public sealed record TextDocument(string Name, string Text);
