using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>
/// Functional.Gemv4Bit: the CPU reference is the f64 product of the f32-dequantized weight; the CUDA kernel stays within its stated
/// f32-accumulation bound of it and close to dequantize + matmul; bad input is a typed error.
/// </summary>
public class Gemv4BitTests
{
    private static readonly (long N, long K)[] Shapes = [(64, 4096), (33, 96), (100, 1000), (7, 33), (1, 8192), (300, 64)];

    [Theory]
    [InlineData(QuantType.NF4, false, ScalarType.BFloat16)]
    [InlineData(QuantType.FP4, true, ScalarType.Float32)]
    [InlineData(QuantType.NF4, true, ScalarType.Float16)]
    public void CpuReferenceIsTheF64ProductOfTheDequantizedWeightRoundedOnce(QuantType type, bool dq, ScalarType dtype)
    {
        manual_seed(11);
        var (n, k) = (40L, 320L);
        var (packed, state) = Quantize(randn(n, k).to_type(dtype), type, dq, 64);
        using var x = randn(1, 1, k).to_type(dtype);
        using var y = Functional.Gemv4Bit(x, packed, state);
        Assert.Equal([1, 1, n], y.shape);
        Assert.Equal(dtype, y.dtype);
        using var w = Functional.Dequantize4Bit(packed, state, empty([n, k], ScalarType.Float32)).to_type(ScalarType.Float64);
        using var exact = x.reshape(1, k).to_type(ScalarType.Float64).matmul(w.t()).to_type(ScalarType.Float32).to_type(dtype).reshape(1, 1, n);
        // f64 sums in another order can differ in the last f64 bits, which the f32 rounding hides except exactly at a tie.
        Assert.True(y.to_type(ScalarType.Float64).allclose(exact.to_type(ScalarType.Float64), 1e-6, 0));
    }

    [Fact]
    public void MoreThanOneRowWrongKAnEightBitStateOrANonMatrixStateAreTypedErrors()
    {
        var (packed, state) = Quantize(randn(8, 64), QuantType.NF4, false, 64);
        Assert.Equal("A", Assert.Throws<ArgumentException>(() => Functional.Gemv4Bit(randn(2, 64), packed, state)).ParamName);
        Assert.Equal("A", Assert.Throws<ArgumentException>(() => Functional.Gemv4Bit(randn(1, 63), packed, state)).ParamName);
        var (q8, s8) = Functional.QuantizeBlockwise(randn(8, 64), blocksize: 64);
        Assert.Equal("state", Assert.Throws<ArgumentException>(() => Functional.Gemv4Bit(randn(1, 64), q8, s8)).ParamName);
        var (p3, s3) = Quantize(randn(2, 4, 64), QuantType.NF4, false, 64);
        Assert.Equal("state", Assert.Throws<ArgumentException>(() => Functional.Gemv4Bit(randn(1, 64), p3, s3)).ParamName);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => Functional.Gemv4Bit(randn(1, 64).to_type(ScalarType.Float64), packed, state)).ParamName);
    }

    public static TheoryData<QuantType, bool, ScalarType> CudaCases()
    {
        var data = new TheoryData<QuantType, bool, ScalarType>();
        foreach (var type in new[] { QuantType.NF4, QuantType.FP4 })
        {
            foreach (var dq in new[] { false, true })
            {
                foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float16, ScalarType.Float32 })
                {
                    data.Add(type, dq, dtype);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(CudaCases))]
    public void CudaGemvMatchesTheCpuReferenceAndDequantizeMatmulWithinTheStatedBounds(QuantType type, bool dq, ScalarType dtype)
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        var cuda = TestDevices.Cuda;
        var p = dtype == ScalarType.BFloat16 ? 8 : dtype == ScalarType.Float16 ? 11 : 24; // significand bits: ulp/2 = 2^-p relative
        var blocksizes = new[] { 64, 128, 256, 1024, 4096, 32 };
        for (var c = 0; c < Shapes.Length; c++)
        {
            using var scope = NewDisposeScope();
            var (n, k) = Shapes[c];
            manual_seed(100 + c);
            var bs = blocksizes[c % blocksizes.Length];
            var (packed, state) = Quantize(randn(n, k).to_type(dtype), type, dq, bs);
            // x one element past a 16-byte boundary (a view into a longer buffer) in every other case: the kernel's element loop
            var buffer = randn(k + 1).to_type(dtype);
            var offset = c % 2;
            var x = buffer.narrow(0, offset, k).reshape(1, k);
            var xCuda = buffer.to(cuda).narrow(0, offset, k).reshape(1, k);
            var reference = Functional.Gemv4Bit(x, packed, state).to_type(ScalarType.Float64);
            var got = Functional.Gemv4Bit(xCuda, packed.to(cuda), state.To(cuda)).cpu().to_type(ScalarType.Float64);

            var w = Functional.Dequantize4Bit(packed, state, empty([n, k], ScalarType.Float32)).to_type(ScalarType.Float64);
            var absDot = x.to_type(ScalarType.Float64).abs().matmul(w.abs().t());
            // Kernel bound (bnbd_gemv_4bit): (K/32 + 40)·2^-24·Σ|x·w| before rounding; then each side rounds once to dtype.
            var acc = ((k / 32.0) + 40) * Math.Pow(2, -24);
            // f16 results below 2^-14 are subnormal: there the final roundings are absolute (half of 2^-24 each).
            var subnormal = dtype == ScalarType.Float16 ? Math.Pow(2, -24) : 1e-30;
            var bound = (absDot * (acc * 1.01)) + (reference.abs() * (2 * Math.Pow(2, -p) * 1.01)) + subnormal;
            var worst = ((got - reference).abs() / bound).max().item<double>();
            Assert.True(worst <= 1.0, $"{type} dq={dq} {dtype} [{n}, {k}] bs {bs}: |cuda - cpu| is {worst:F3} of the bound");

            // Against the Linear4bit path on the GPU (weight rounded to dtype, cuBLAS): one weight rounding per term, two output
            // roundings and both accumulations, all ≤ 2^-p (or the f32 accumulation bound) of Σ|x·w|.
            var dense = Functional.Dequantize4Bit(packed.to(cuda), state.To(cuda));
            var mm = xCuda.matmul(dense.reshape(n, k).t()).cpu().to_type(ScalarType.Float64);
            var looser = (absDot * ((4 * Math.Pow(2, -p)) + (2 * acc))) + subnormal;
            var worstMm = ((got - mm).abs() / looser).max().item<double>();
            Assert.True(worstMm <= 1.0, $"{type} dq={dq} {dtype} [{n}, {k}]: |gemv - dequant·matmul| is {worstMm:F3} of the bound");
        }
    }

    [Fact]
    public void CudaGemvOfAnEmptyRowIsZeros()
    {
        Assert.SkipUnless(TestDevices.CudaAvailable, TestDevices.NoCudaReason);
        var (packed, state) = Quantize(randn(5, 0, device: TestDevices.Cuda), QuantType.NF4, false, 64);
        using var y = Functional.Gemv4Bit(empty(1, 0, device: TestDevices.Cuda), packed, state);
        Assert.Equal(0.0, y.abs().sum().item<float>());
    }

    private static (Tensor Packed, QuantState State) Quantize(Tensor w, QuantType type, bool dq, int blocksize) =>
        Functional.Quantize4Bit(w, blocksize, dq, type);
}
