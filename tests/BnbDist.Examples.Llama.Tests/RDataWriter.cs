using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>
/// Writes R's XDR serialization (version 3) and lazy-load databases the way R does (symbols once, then references),
/// so the reader is tested on files built here rather than only on the fetched package.
/// </summary>
internal sealed class RDataWriter
{
    private readonly MemoryStream ms = new();
    private readonly List<string> symbols = [];

    public static byte[] Serialize(Action<RDataWriter> body)
    {
        var w = new RDataWriter();
        w.ms.Write("X\n"u8);
        w.Int(3);
        w.Int(0x00040201);
        w.Int(0x00030500);
        w.Int(5);
        w.ms.Write("UTF-8"u8);
        body(w);
        return w.ms.ToArray();
    }

    /// <summary>Writes NAME.rdx/NAME.rdb holding the given character vectors; returns the .rdx path.</summary>
    public static string WriteDatabase(string directory, string name, IReadOnlyDictionary<string, string?[]> objects)
    {
        var rdb = new MemoryStream();
        var entries = new List<(string Name, int Offset, int Length)>();
        foreach (var (objName, values) in objects)
        {
            var plain = Serialize(w => w.Strings(values));
            var compressed = new MemoryStream();
            using (var z = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true))
            {
                z.Write(plain);
            }

            var offset = (int)rdb.Length;
            var len = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(len, plain.Length);
            rdb.Write(len);
            rdb.Write(compressed.ToArray());
            entries.Add((objName, offset, (int)rdb.Length - offset));
        }

        var rdbPath = Path.Combine(directory, name + ".rdb");
        File.WriteAllBytes(rdbPath, rdb.ToArray());
        var index = Serialize(w =>
        {
            // list(variables = list(<name> = c(offset, length), ...), references = list(), compressed = TRUE)
            w.ListHeader(3, hasAttributes: true);
            w.ListHeader(entries.Count, hasAttributes: true);
            foreach (var e in entries)
            {
                w.Ints([e.Offset, e.Length]);
            }

            w.NamesAttribute([.. entries.Select(e => e.Name)]);
            w.ListHeader(0, hasAttributes: false);
            w.Int(10); // LGLSXP
            w.Int(1);
            w.Int(1);
            w.NamesAttribute(["variables", "references", "compressed"]);
        });
        var rdxPath = Path.Combine(directory, name + ".rdx");
        using (var file = File.Create(rdxPath))
        using (var gz = new GZipStream(file, CompressionLevel.Optimal))
        {
            gz.Write(index);
        }

        return rdxPath;
    }

    public void Int(int v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(b, v);
        ms.Write(b);
    }

    public void ListHeader(int n, bool hasAttributes)
    {
        Int(19 | (hasAttributes ? 1 << 9 : 0));
        Int(n);
    }

    public void Ints(int[] values)
    {
        Int(13);
        Int(values.Length);
        foreach (var v in values)
        {
            Int(v);
        }
    }

    public void Strings(string?[] values)
    {
        Int(16);
        Int(values.Length);
        foreach (var v in values)
        {
            CharSxp(v);
        }
    }

    /// <summary>A pairlist (names = STRSXP) terminated by NULL; the symbol is written once, then referenced.</summary>
    public void NamesAttribute(string[] names)
    {
        Int(2 | (1 << 10));
        Symbol("names");
        Strings(names);
        Int(254);
    }

    private void Symbol(string name)
    {
        var index = symbols.IndexOf(name);
        if (index >= 0)
        {
            Int(((index + 1) << 8) | 255);
            return;
        }

        Int(1);
        CharSxp(name);
        symbols.Add(name);
    }

    private void CharSxp(string? v)
    {
        if (v is null)
        {
            Int(9);
            Int(-1);
            return;
        }

        var bytes = Encoding.UTF8.GetBytes(v);
        var ascii = bytes.All(b => b < 128);
        Int(9 | ((ascii ? 64 : 8) << 12));
        Int(bytes.Length);
        ms.Write(bytes);
    }
}
