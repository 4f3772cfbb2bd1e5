using System.Text;
using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Tests.Serialization;

/// <summary>The strict safetensors reader/writer: exact round trips, and a typed error naming the file for every malformation.</summary>
public sealed class SafeTensorsTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("bnbdist-st-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void RoundTripsEveryDtypeExactly()
    {
        var tensors = new Dictionary<string, Tensor>
        {
            ["f32"] = randn(3, 5),
            ["bf16"] = randn(7).to_type(ScalarType.BFloat16),
            ["f16"] = randn(2, 2, 2).to_type(ScalarType.Float16),
            ["f64"] = randn(4, dtype: ScalarType.Float64),
            ["u8"] = randint(0, 255, [9], dtype: ScalarType.Byte),
            ["i8"] = randint(-128, 127, [9], dtype: ScalarType.Int8),
            ["i16"] = randint(-1000, 1000, [3], dtype: ScalarType.Int16),
            ["i32"] = randint(-1000, 1000, [3], dtype: ScalarType.Int32),
            ["i64"] = randint(-1000, 1000, [3], dtype: ScalarType.Int64),
            ["bool"] = randn(5).gt(0),
            ["scalar"] = tensor(3.5f),
            ["empty"] = empty(0, 4),
        };
        var path = Path.Combine(dir, "all.safetensors");
        SafeTensorsFile.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });

        var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        foreach (var (name, expected) in tensors)
        {
            var actual = file.Read(name);
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.Equal(expected.shape, actual.shape);
            Assert.Equal(Bytes(expected), Bytes(actual));
        }

        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));
    }

    [Fact]
    public void ReadsTheGoldenFileWrittenByPythonSafetensors()
    {
        var file = SafeTensorsFile.Open(Golden.FindPath());
        Assert.Equal(615, file.Tensors.Count);
        Assert.Equal([64L, 320L], file.Info("int8.A").Shape);
    }

    [Fact]
    public void TruncatedFileNamesTheFile()
    {
        var path = Write("t.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^3]);
        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.Contains("truncated", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HeaderLengthBeyondTheFileIsRejected()
    {
        var path = Write("h.safetensors");
        var bytes = File.ReadAllBytes(path);
        BitConverter.GetBytes(ulong.MaxValue).CopyTo(bytes, 0);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("header length", Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TinyFileIsRejected()
    {
        var path = Path.Combine(dir, "tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path));
    }

    [Theory]
    [InlineData("{not json", "not valid JSON")]
    [InlineData("[1,2]", "not a JSON object")]
    [InlineData("{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", "unsupported dtype")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", "need 8")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "non-negative")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", "overlaps")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "gap")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "data_offsets")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", "invalid data_offsets")]
    [InlineData("{\"__metadata__\":{\"k\":1}}", "not a string")]
    public void MalformedHeadersAreTypedErrors(string header, string expected)
    {
        var path = Path.Combine(dir, "bad.safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        using (var fs = File.Create(path))
        {
            fs.Write(BitConverter.GetBytes((ulong)h.Length));
            fs.Write(h);
            fs.Write(new byte[8]);
        }

        var ex = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        Assert.Equal(path, ex.FilePath);
    }

    [Fact]
    public void MissingFileIsFileNotFound() =>
        Assert.Throws<FileNotFoundException>(() => SafeTensorsFile.Open(Path.Combine(dir, "nope.safetensors")));

    [Fact]
    public void UnknownTensorNameNamesTheFile()
    {
        var path = Write("k.safetensors");
        var ex = Assert.Throws<KeyNotFoundException>(() => SafeTensorsFile.Open(path).Read("missing"));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OverwritingKeepsTheOldFileUntilTheNewOneIsComplete()
    {
        var path = Write("w.safetensors");
        var before = File.ReadAllBytes(path);
        // A tensor whose bytes cannot be written (an unsupported dtype) fails before the rename.
        var bad = new Dictionary<string, Tensor> { ["c"] = randn(2, dtype: ScalarType.ComplexFloat32) };
        Assert.ThrowsAny<ArgumentException>(() => SafeTensorsFile.Save(path, bad));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));
    }

    private string Write(string name)
    {
        var path = Path.Combine(dir, name);
        SafeTensorsFile.Save(path, new Dictionary<string, Tensor> { ["a"] = randn(10), ["b"] = randn(3) });
        return path;
    }

    private static byte[] Bytes(Tensor t)
    {
        using var ms = new MemoryStream();
        if (t.numel() > 0)
        {
            t.contiguous().WriteBytesToStream(ms);
        }

        return ms.ToArray();
    }
}
