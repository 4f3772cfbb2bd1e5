using BnbDist.Backends;
using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>Functional.Int8LinearMatmul: exact int32 results on the CPU, the same bits from cuBLASLt (and its fallback) on CUDA.</summary>
public class Int8MatmulTests
{
    [Fact]
    public void CpuProductIsExactAgainstAnInt64MatmulIncludingExtremeValues()
    {
        manual_seed(3);
        using var a = randint(-128, 128, [37, 515], ScalarType.Int8);
        using var b = randint(-128, 128, [19, 515], ScalarType.Int8);
        a[0] = full(515, -128, ScalarType.Int8); // the largest products: (-128)·(-128)
        b[0] = full(515, -128, ScalarType.Int8);
        using var c = Functional.Int8LinearMatmul(a, b);
        Assert.Equal(ScalarType.Int32, c.dtype);
        using var exact = a.to_type(ScalarType.Int64).matmul(b.to_type(ScalarType.Int64).t());
        Assert.True(c.to_type(ScalarType.Int64).equal(exact).all().item<bool>());
        Assert.Equal(515 * 16384, c[0, 0].item<int>());
    }

    [Fact]
    public void LeadingDimensionsAreKeptAndBadShapesOrKAboveTheExactRangeAreTypedErrors()
    {
        using var a = randint(-5, 5, [2, 3, 8], ScalarType.Int8);
        using var b = randint(-5, 5, [4, 8], ScalarType.Int8);
        using var c = Functional.Int8LinearMatmul(a, b);
        Assert.Equal([2, 3, 4], c.shape);
        Assert.Equal("B", Assert.Throws<ArgumentException>(() => Functional.Int8LinearMatmul(a, randint(-5, 5, [4, 7], ScalarType.Int8))).ParamName);
        Assert.Equal("A", Assert.Throws<ArgumentException>(() => Functional.Int8LinearMatmul(a.to_type(ScalarType.Float32), b)).ParamName);
        var k = QuantBackendBase.MaxInt8MatmulK + 1;
        Assert.Equal("A", Assert.Throws<ArgumentException>(() =>
            Functional.Int8LinearMatmul(zeros(1, k, ScalarType.Int8), zeros(1, k, ScalarType.Int8))).ParamName);
    }

    [Theory]
    [InlineData(64, 256, 512)] // cuBLASLt
    [InlineData(1, 8192, 8192)] // cuBLASLt, one row
    [InlineData(300, 96, 4100)] // cuBLASLt, odd row count
    [InlineData(5, 7, 33)] // K, N not multiples of 4: the exact fallback
    [InlineData(16, 12, 30)] // K not a multiple of 4
    public void CudaProductEqualsTheExactCpuProductBitForBit(int m, int n, int k)
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        manual_seed(m + n + k);
        using var scope = NewDisposeScope();
        var a = randint(-128, 128, [m, k], ScalarType.Int8);
        var b = randint(-128, 128, [n, k], ScalarType.Int8);
        a[0] = full(k, -128, ScalarType.Int8);
        b[0] = full(k, -128, ScalarType.Int8);
        var cpu = Functional.Int8LinearMatmul(a, b);
        var gpu = Functional.Int8LinearMatmul(a.to(TestDevices.Cuda), b.to(TestDevices.Cuda));
        Assert.Equal(TestDevices.Cuda.type, gpu.device_type);
        Assert.True(gpu.cpu().equal(cpu).all().item<bool>(), $"M={m} N={n} K={k}: CUDA differs from the exact product");
    }
}
