using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Corpora.RData;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>The R lazy-load database reader and the two corpora: synthetic files, the fetched files when present, typed errors.</summary>
public sealed class CorpusTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("bnbdist-corpus-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void LazyLoadDatabaseReadsCharacterVectorsWrittenLikeR()
    {
        var rdx = RDataWriter.WriteDatabase(dir, "Rdata", new Dictionary<string, string?[]>
        {
            ["zeta"] = ["first line", "", "naïve — “quoted”", null],
            ["alpha"] = [.. Enumerable.Range(0, 5000).Select(i => $"line {i}")],
        });

        var db = LazyLoadDatabase.Open(rdx);
        Assert.Equal(["alpha", "zeta"], db.Names);
        var zeta = Assert.IsType<RStringVector>(db.Read("zeta"));
        Assert.Equal(["first line", "", "naïve — “quoted”", null], zeta.Values);
        Assert.Equal("line 4999", db.ReadStrings("alpha")[4999]);
        Assert.Contains("alpha, zeta", Assert.Throws<KeyNotFoundException>(() => db.Read("missing")).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CorruptBlobIsAFormatErrorNamingTheFileAndObject()
    {
        var rdx = RDataWriter.WriteDatabase(dir, "Rdata", new Dictionary<string, string?[]> { ["a"] = ["x", "y"] });
        var rdb = Path.ChangeExtension(rdx, ".rdb");
        var bytes = File.ReadAllBytes(rdb);
        bytes[^3] ^= 0xFF; // damages the zlib stream (or its checksum)
        File.WriteAllBytes(rdb, bytes);
        var ex = Assert.Throws<RDataFormatException>(() => LazyLoadDatabase.Open(rdx).Read("a"));
        Assert.Contains("Rdata.rdb [a]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void JaneAustenLoadsSixNovelsFromASyntheticDatabase()
    {
        var novels = JaneAustenCorpus.Novels.ToDictionary(n => n, n => new string?[] { n.ToUpperInvariant(), "", $"Text of {n}." });
        var rdx = RDataWriter.WriteDatabase(dir, "Rdata", novels);
        var docs = JaneAustenCorpus.Load(rdx);
        Assert.Equal(JaneAustenCorpus.Novels, docs.Select(d => d.Name));
        Assert.Equal("EMMA\n\nText of emma.", docs[0].Text);
    }

    [Fact]
    public void JaneAustenMissingOrEmptyIsATypedErrorWithTheFetchCommand()
    {
        var missing = Path.Combine(dir, "nowhere", "Rdata.rdx");
        var notFound = Assert.Throws<CorpusNotFoundException>(() => JaneAustenCorpus.Load(missing));
        Assert.Contains(missing, notFound.Message, StringComparison.Ordinal);
        Assert.Contains(DataCache.FetchCommand, notFound.Message, StringComparison.Ordinal);

        var novels = JaneAustenCorpus.Novels.ToDictionary(n => n, n => n == "persuasion" ? new string?[] { "", "  " } : ["text"]);
        var rdx = RDataWriter.WriteDatabase(dir, "Rdata", novels);
        var empty = Assert.Throws<EmptyCorpusException>(() => JaneAustenCorpus.Load(rdx));
        Assert.Contains("persuasion", empty.Message, StringComparison.Ordinal);
        Assert.Contains(DataCache.FetchCommand, empty.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FetchedJaneAustenHasTheKnownNovels()
    {
        var rdx = JaneAustenCorpus.IndexPath();
        Assert.SkipUnless(File.Exists(rdx), $"the corpus is not fetched ({rdx}); run {DataCache.FetchCommand} to include this test.");
        var db = LazyLoadDatabase.Open(rdx);
        var emma = db.ReadStrings("emma");
        Assert.Equal(16235, emma.Count);
        Assert.Equal("EMMA", emma[0]);
        Assert.Equal("By Jane Austen", emma[2]);
        Assert.Equal(13030, db.ReadStrings("prideprejudice").Count);
        var docs = JaneAustenCorpus.Load(rdx);
        Assert.Equal(6, docs.Count);
        Assert.All(docs, d => Assert.True(d.Text.Length > 300_000, $"{d.Name}: {d.Text.Length} chars"));
    }

    [Fact]
    public void SotuLoadsTextFilesInNameOrderAndCleansControlBytes()
    {
        File.WriteAllText(Path.Combine(dir, "1791_b_n.txt"), "Second\r\naddress\u0002.");
        File.WriteAllText(Path.Combine(dir, "1790_a_n.txt"), "First address.");
        File.WriteAllText(Path.Combine(dir, "1790_a_n.json"), "{\"ignored\": true}");
        File.WriteAllText(Path.Combine(dir, "1792_c_n.txt"), "   ");
        var docs = SotuCorpus.Load(dir);
        Assert.Equal(["1790_a_n", "1791_b_n"], docs.Select(d => d.Name));
        Assert.Equal("Second\naddress .", docs[1].Text);
    }

    [Fact]
    public void SotuMissingOrEmptyIsATypedErrorWithThePath()
    {
        var missing = Path.Combine(dir, "none");
        Assert.Contains(missing, Assert.Throws<CorpusNotFoundException>(() => SotuCorpus.Load(missing)).Message, StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(dir, "1790_a_n.txt"), "\n");
        var ex = Assert.Throws<EmptyCorpusException>(() => SotuCorpus.Load(dir));
        Assert.Contains(dir, ex.Message, StringComparison.Ordinal);
        Assert.Contains(DataCache.FetchCommand, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FetchedSotuHas233Addresses()
    {
        var path = SotuCorpus.DataDirectory();
        Assert.SkipUnless(Directory.Exists(path), $"the corpus is not fetched ({path}); run {DataCache.FetchCommand} to include this test.");
        var docs = SotuCorpus.Load(path);
        Assert.Equal(233, docs.Count);
        Assert.Equal("1790_george_washington_n", docs[0].Name);
        Assert.StartsWith("Fellow-Citizens of the Senate", docs[0].Text, StringComparison.Ordinal);
    }

    [Fact]
    public void DataCacheHonoursTheEnvironmentVariableElseFindsTheRepositoryRoot()
    {
        Assert.Equal(Path.GetFullPath(dir), DataCache.ResolveRoot(dir));
        var root = DataCache.ResolveRoot(null);
        Assert.Equal(".data", Path.GetFileName(root));
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(root)!, "BnbDist.sln")), root);
    }
}
