using BnbDist.Backends.Cuda;
using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>Bad input is an ArgumentException naming the argument, raised before any native call.</summary>
public class BadInputTests
{
    [Fact]
    public void WrongInputDtypeNamesA()
    {
        using var a = ones(100, ScalarType.Int32);
        Assert.Equal("A", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a)).ParamName);
        Assert.Equal("A", Assert.Throws<ArgumentException>(() => Functional.QuantizeNF4(a)).ParamName);
        Assert.Equal("A", Assert.Throws<ArgumentException>(() => Functional.Int8VectorwiseQuant(a.view(10, 10))).ParamName);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(16)]
    [InlineData(100)]
    [InlineData(8192)]
    [InlineData(-64)]
    public void UnsupportedBlocksizeNamesBlocksize(int bs)
    {
        using var a = randn(1000);
        Assert.Equal("blocksize", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, blocksize: bs)).ParamName);
        Assert.Equal("blocksize", Assert.Throws<ArgumentException>(() => Functional.Quantize4Bit(a, bs)).ParamName);
    }

    [Fact]
    public void NonContiguousInputNamesA()
    {
        using var a = randn(64, 128).t();
        var ex = Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, blocksize: 64));
        Assert.Equal("A", ex.ParamName);
        Assert.Contains("contiguous", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WrongSizedOutputsNameTheirArgument()
    {
        using var a = randn(1000);
        using var smallOut = empty(999, ScalarType.Byte);
        Assert.Equal("out", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, blocksize: 64, @out: smallOut)).ParamName);
        using var smallAbsmax = empty(3);
        Assert.Equal("absmax", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, blocksize: 64, absmax: smallAbsmax)).ParamName);
        using var wrongType = empty(16, ScalarType.Int32);
        Assert.Equal("absmax", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, blocksize: 64, absmax: wrongType)).ParamName);
        using var packed = empty(10, ScalarType.Byte);
        Assert.Equal("packed", Assert.Throws<ArgumentException>(() => Functional.Quantize4Bit(a, @out: packed)).ParamName);
    }

    [Fact]
    public void WrongCodeBookNamesCode()
    {
        using var a = randn(1000);
        using var code = zeros(255);
        Assert.Equal("code", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, code, 64)).ParamName);
    }

    [Fact]
    public void CpuTensorsGivenToTheCudaBackendAreRejectedBeforeAnyNativeCall()
    {
        // The CUDA backend validates placement first, so this runs on machines without CUDA too.
        var cuda = new CudaQuantBackend();
        using var a = randn(256);
        using var code = zeros(256);
        using var absmax = zeros(4);
        using var q = zeros(256, ScalarType.Byte);
        var ex = Assert.Throws<ArgumentException>(() => cuda.QuantizeBlockwise(a, code, null, absmax, q, 64));
        Assert.Equal("A", ex.ParamName);
        Assert.Contains("cuda backend", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MismatchedDevicesNameTheOddTensorOut()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        using var a = randn(256, device: TestDevices.Cuda);
        using var code = CodeBooks.DynamicMap(true); // on CPU
        Assert.Equal("code", Assert.Throws<ArgumentException>(() => Functional.QuantizeBlockwise(a, code, 64)).ParamName);
    }

    [Fact]
    public void EightBitStateGivenToFourBitDequantNamesState()
    {
        using var a = randn(256);
        var (q, state) = Functional.QuantizeBlockwise(a, blocksize: 64);
        Assert.Equal("state", Assert.Throws<ArgumentException>(() => Functional.Dequantize4Bit(q, state)).ParamName);
    }

    [Fact]
    public void EmptyInputsGiveEmptyOutputs()
    {
        using var a = empty(0);
        var (q, state) = Functional.QuantizeBlockwise(a, blocksize: 64);
        Assert.Equal(0, q.numel());
        Assert.Equal(0, state.Absmax.numel());
        var (p, s4) = Functional.QuantizeNF4(a);
        Assert.Equal(0, p.numel());
        Assert.Equal(0, Functional.Dequantize4Bit(p, s4).numel());
    }

    [Fact]
    public void NegativeOrNaNThresholdNamesThreshold()
    {
        using var a = randn(4, 4);
        Assert.Equal("threshold", Assert.Throws<ArgumentException>(() => Functional.Int8VectorwiseQuant(a, -1f)).ParamName);
        Assert.Equal("threshold", Assert.Throws<ArgumentException>(() => Functional.Int8VectorwiseQuant(a, float.NaN)).ParamName);
    }
}
