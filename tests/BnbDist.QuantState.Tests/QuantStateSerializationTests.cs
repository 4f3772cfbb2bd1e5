using System.Text;
using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>QuantState's packed dictionary form against bitsandbytes' Linear4bit state_dict (golden lin4.*).</summary>
public class QuantStateSerializationTests
{
    [Theory]
    [InlineData("nf4")]
    [InlineData("fp4")]
    public void RoundTripsGoldenLinear4bitStateByteForByte(string type)
    {
        var prefix = $"lin4.{type}.";
        var golden = Golden.Data.Names.Where(n => n.StartsWith(prefix + "weight.", StringComparison.Ordinal))
            .ToDictionary(n => n[prefix.Length..], Golden.Get);

        var state = QuantState.FromDictionary(golden);
        Assert.True(state.Nested);
        Assert.Equal(type == "nf4" ? QuantType.NF4 : QuantType.FP4, state.QuantType);
        Assert.Equal([256L, 320L], state.Shape);
        Assert.Equal(64, state.BlockSize);

        var written = state.ToDictionary();
        Assert.Equal(golden.Count, written.Count);
        foreach (var (key, expected) in golden)
        {
            var actual = written[key["weight.".Length..]];
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.Equal(expected.numel(), actual.numel());
            Assert.Equal(ToBytes(expected), ToBytes(actual));
        }
    }

    [Fact]
    public void PackedJsonIsPythonJsonDumpsText()
    {
        // The golden blob: json.dumps with ", " / ": " separators and Python's float repr of the f32 offset.
        var blob = Encoding.UTF8.GetString(Golden.Get("lin4.nf4.weight.quant_state.bitsandbytes__nf4").data<byte>().ToArray());
        Assert.StartsWith("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"", blob, StringComparison.Ordinal);
        var state = QuantState.FromDictionary(Golden.Data.Names.Where(n => n.StartsWith("lin4.nf4.weight.", StringComparison.Ordinal))
            .ToDictionary(n => n, Golden.Get));
        Assert.Equal(blob, state.PackedJson());
    }

    [Fact]
    public void QuantizingThenSerializingThenLoadingDequantizesIdentically()
    {
        using var x = randn(300, 400);
        var (packed, state) = Functional.QuantizeNF4(x, 64, compressStatistics: true);
        var loaded = QuantState.FromDictionary(state.ToDictionary().ToDictionary(kv => "weight." + kv.Key, kv => kv.Value));
        var a = Functional.Dequantize4Bit(packed, state);
        var b = Functional.Dequantize4Bit(packed, loaded);
        GoldenBlockwise8BitTests.AssertBitEqual(a, b, "dequant after reload");
    }

    [Fact]
    public void MissingPackedEntryIsATypedErrorNamingIt()
    {
        var d = LoadGolden("nf4");
        d.Remove("weight.quant_state.bitsandbytes__nf4");
        var ex = Assert.Throws<QuantStateFormatException>(() => QuantState.FromDictionary(d));
        Assert.Contains("quant_state", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ExtraKeyIsATypedErrorNamingIt()
    {
        var d = LoadGolden("nf4");
        d["weight.bogus"] = zeros(1);
        var ex = Assert.Throws<QuantStateFormatException>(() => QuantState.FromDictionary(d));
        Assert.Equal("weight.bogus", ex.Key);
    }

    [Fact]
    public void MisShapedAbsmaxIsATypedErrorNamingIt()
    {
        var d = LoadGolden("nf4");
        d["weight.absmax"] = zeros(10, ScalarType.Byte);
        var ex = Assert.Throws<QuantStateFormatException>(() => QuantState.FromDictionary(d));
        Assert.Equal("weight.absmax", ex.Key);
    }

    [Theory]
    [InlineData("{not json")]
    [InlineData("{\"quant_type\": \"nf4\"}")]
    [InlineData("{\"quant_type\": \"nf5\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [256, 320]}")]
    [InlineData("{\"quant_type\": \"nf4\", \"blocksize\": -1, \"dtype\": \"float32\", \"shape\": [256, 320]}")]
    [InlineData("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [256, 320], \"evil\": 1}")]
    public void CorruptPackedBlobIsATypedError(string json)
    {
        var d = LoadGolden("nf4");
        d["weight.quant_state.bitsandbytes__nf4"] = tensor(Encoding.UTF8.GetBytes(json), ScalarType.Byte);
        var ex = Assert.Throws<QuantStateFormatException>(() => QuantState.FromDictionary(d));
        Assert.Contains("bitsandbytes__nf4", ex.Key, StringComparison.Ordinal);
    }

    private static Dictionary<string, Tensor> LoadGolden(string type)
    {
        var prefix = $"lin4.{type}.";
        return Golden.Data.Names.Where(n => n.StartsWith(prefix + "weight.", StringComparison.Ordinal))
            .ToDictionary(n => n[prefix.Length..], Golden.Get);
    }

    private static byte[] ToBytes(Tensor t)
    {
        using var ms = new MemoryStream();
        t.contiguous().WriteBytesToStream(ms);
        return ms.ToArray();
    }
}
