using System.Text.RegularExpressions;

namespace BnbDist.Examples.Llama.Tokenization;

/// <summary>
/// GPT-2's byte-level conventions, as Hugging Face's <c>ByteLevel</c> pre-tokenizer applies them: text is split by
/// GPT-2's regular expression, and each byte is shown as a printable character (space = <c>Ġ</c>) so that every
/// token of the vocabulary is a string.
/// </summary>
public static partial class ByteLevel
{
    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(x => x.c, x => (byte)x.b);

    /// <summary>The printable character standing for byte <paramref name="b"/>.</summary>
    public static char ToChar(byte b) => ByteToChar[b];

    /// <summary>A byte string as its printable form.</summary>
    public static string ToPrintable(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
        {
            chars[i] = ByteToChar[bytes[i]];
        }

        return new string(chars);
    }

    /// <summary>The bytes of a printable token, or null if it holds a character outside the byte alphabet.</summary>
    public static byte[]? FromPrintable(string token)
    {
        var bytes = new byte[token.Length];
        for (var i = 0; i < token.Length; i++)
        {
            if (!CharToByte.TryGetValue(token[i], out bytes[i]))
            {
                return null;
            }
        }

        return bytes;
    }

    /// <summary>Splits text into GPT-2's pre-tokens (contractions, letters, digits, punctuation, spaces).</summary>
    public static IEnumerable<string> PreTokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        for (var m = Gpt2Pattern().Match(text); m.Success; m = m.NextMatch())
        {
            yield return m.Value;
        }
    }

    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.CultureInvariant)]
    private static partial Regex Gpt2Pattern();

    // GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }

        return map;
    }
}
