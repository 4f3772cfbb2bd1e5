using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Backends;

/// <summary>
/// Validates every argument of every op, then calls the device-specific implementation. Bad input is an
/// <see cref="ArgumentException"/> naming the argument and never reaches native code.
/// </summary>
public abstract class QuantBackendBase : IQuantBackend
{
    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <inheritdoc/>
    public abstract DeviceType DeviceType { get; }

    /// <inheritdoc/>
    public void QuantizeBlockwise(Tensor A, Tensor code, Tensor? subOffset, Tensor absmax, Tensor output, int blocksize)
    {
        var n = CheckFloatInput(A, nameof(A));
        CheckBlocksize(blocksize, nameof(blocksize));
        CheckTensor(code, nameof(code), ScalarType.Float32, 256, A);
        if (subOffset is not null)
        {
            CheckTensor(subOffset, nameof(subOffset), ScalarType.Float32, 1, A);
        }

        CheckTensor(absmax, nameof(absmax), ScalarType.Float32, Blocks(n, blocksize), A);
        CheckTensor(output, nameof(output), ScalarType.Byte, n, A);
        if (n > 0)
        {
            QuantizeBlockwiseCore(A, code, subOffset, absmax, output, n, blocksize);
        }
    }

    /// <inheritdoc/>
    public void DequantizeBlockwise(Tensor A, Tensor code, Tensor absmax, Tensor output, int blocksize)
    {
        var n = CheckFloatInput(output, nameof(output));
        CheckBlocksize(blocksize, nameof(blocksize));
        CheckTensor(A, nameof(A), ScalarType.Byte, n, output);
        CheckTensor(code, nameof(code), ScalarType.Float32, 256, output);
        CheckTensor(absmax, nameof(absmax), ScalarType.Float32, Blocks(n, blocksize), output);
        if (n > 0)
        {
            DequantizeBlockwiseCore(A, code, absmax, output, n, blocksize);
        }
    }

    /// <inheritdoc/>
    public void Quantize4Bit(Tensor A, QuantType quantType, Tensor absmax, Tensor packed, int blocksize)
    {
        var n = CheckFloatInput(A, nameof(A));
        CheckQuantType(quantType);
        CheckBlocksize(blocksize, nameof(blocksize));
        CheckTensor(absmax, nameof(absmax), ScalarType.Float32, Blocks(n, blocksize), A);
        CheckTensor(packed, nameof(packed), ScalarType.Byte, (n + 1) / 2, A);
        if (n > 0)
        {
            Quantize4BitCore(A, quantType, absmax, packed, n, blocksize);
        }
    }

    /// <inheritdoc/>
    public void Dequantize4Bit(Tensor packed, QuantType quantType, FourBitScales scales, Tensor output, int blocksize)
    {
        ArgumentNullException.ThrowIfNull(scales);
        var n = CheckFloatInput(output, nameof(output));
        CheckQuantType(quantType);
        CheckBlocksize(blocksize, nameof(blocksize));
        CheckTensor(packed, nameof(packed), ScalarType.Byte, (n + 1) / 2, output);
        CheckScales(scales, Blocks(n, blocksize), output);
        if (n > 0)
        {
            Dequantize4BitCore(packed, quantType, scales, output, n, blocksize);
        }
    }

    /// <inheritdoc/>
    public void Gemv4Bit(Tensor x, Tensor packed, QuantType quantType, FourBitScales scales, Tensor output, int blocksize)
    {
        ArgumentNullException.ThrowIfNull(scales);
        var k = CheckFloatInput(x, nameof(x));
        CheckQuantType(quantType);
        CheckBlocksize(blocksize, nameof(blocksize));
        ArgumentNullException.ThrowIfNull(output);
        var rows = output.numel();
        CheckTensor(output, nameof(output), x.dtype, rows, x);
        var n = rows * k;
        CheckTensor(packed, nameof(packed), ScalarType.Byte, (n + 1) / 2, x);
        CheckScales(scales, Blocks(n, blocksize), x);
        if (rows == 0)
        {
            return;
        }

        if (k == 0)
        {
            output.zero_();
            return;
        }

        Gemv4BitCore(x, packed, quantType, scales, output, rows, k, blocksize);
    }

    /// <summary>The largest K of <see cref="Int8LinearMatmul"/>: K·128² ≤ 2^31 − 1 keeps every int32 sum exact.</summary>
    public const long MaxInt8MatmulK = 131071;

    /// <inheritdoc/>
    public void Int8LinearMatmul(Tensor A, Tensor B, Tensor output)
    {
        foreach (var (t, name) in new[] { (A, nameof(A)), (B, nameof(B)) })
        {
            ArgumentNullException.ThrowIfNull(t, name);
            if (t.dtype != ScalarType.Int8 || t.dim() != 2)
            {
                throw new ArgumentException($"{name} must be a 2-D int8 tensor; got {t.dtype} [{string.Join(", ", t.shape)}].", name);
            }

            CheckPlacement(t, name);
        }

        var (m, k, nOut) = (A.shape[0], A.shape[1], B.shape[0]);
        if (B.shape[1] != k)
        {
            throw new ArgumentException($"B must be [N, {k}] (K = A's columns); got [{string.Join(", ", B.shape)}].", nameof(B));
        }

        if (k > MaxInt8MatmulK)
        {
            throw new ArgumentException($"K = {k} exceeds {MaxInt8MatmulK}: int32 sums of int8 products could overflow.", nameof(A));
        }

        CheckTensor(B, nameof(B), ScalarType.Int8, nOut * k, A);
        CheckTensor(output, nameof(output), ScalarType.Int32, m * nOut, A);
        if (m * nOut == 0)
        {
            return;
        }

        if (k == 0)
        {
            output.zero_();
            return;
        }

        Int8LinearMatmulCore(A, B, output, m, nOut, k);
    }

    /// <inheritdoc/>
    public void Mean(Tensor x, Tensor output)
    {
        ArgumentNullException.ThrowIfNull(x);
        CheckTensor(x, nameof(x), ScalarType.Float32, x.numel(), x);
        CheckTensor(output, nameof(output), ScalarType.Float32, 1, x);
        MeanCore(x, output, x.numel());
    }

    /// <inheritdoc/>
    public void Int8VectorwiseQuant(Tensor A, float threshold, Tensor output, Tensor rowStats)
    {
        CheckFloatInput(A, nameof(A));
        if (A.dim() != 2)
        {
            throw new ArgumentException($"A must be 2-D [rows, cols]; got shape [{string.Join(", ", A.shape)}].", nameof(A));
        }

        if (float.IsNaN(threshold) || threshold < 0f)
        {
            throw new ArgumentException($"threshold must be ≥ 0 and not NaN; got {threshold}.", nameof(threshold));
        }

        var rows = A.shape[0];
        var cols = A.shape[1];
        CheckTensor(output, nameof(output), ScalarType.Int8, rows * cols, A);
        CheckTensor(rowStats, nameof(rowStats), ScalarType.Float32, rows, A);
        if (rows * cols > 0)
        {
            Int8VectorwiseQuantCore(A, threshold, output, rowStats, rows, cols);
        }
    }

    /// <summary>Number of blocks of <paramref name="blocksize"/> covering <paramref name="n"/> elements.</summary>
    public static long Blocks(long n, int blocksize) => (n + blocksize - 1) / blocksize;

    /// <summary>Whether a block size is one the kernels accept (a power of two from 32 to 4096).</summary>
    public static bool IsSupportedBlocksize(int blocksize) =>
        blocksize is >= 32 and <= 4096 && (blocksize & (blocksize - 1)) == 0;

    /// <summary>The ABI dtype code (0 f32, 1 bf16, 2 f16) of a float dtype.</summary>
    protected static int DTypeCode(ScalarType t) => t switch
    {
        ScalarType.Float32 => 0,
        ScalarType.BFloat16 => 1,
        ScalarType.Float16 => 2,
        _ => throw new ArgumentException($"Unsupported dtype {t}."),
    };

    /// <summary>Device-specific 8-bit quantization; arguments are validated and n &gt; 0.</summary>
    protected abstract void QuantizeBlockwiseCore(Tensor A, Tensor code, Tensor? subOffset, Tensor absmax, Tensor output,
        long n, int blocksize);

    /// <summary>Device-specific 8-bit dequantization; arguments are validated and n &gt; 0.</summary>
    protected abstract void DequantizeBlockwiseCore(Tensor A, Tensor code, Tensor absmax, Tensor output, long n, int blocksize);

    /// <summary>Device-specific 4-bit quantization; arguments are validated and n &gt; 0.</summary>
    protected abstract void Quantize4BitCore(Tensor A, QuantType quantType, Tensor absmax, Tensor packed, long n, int blocksize);

    /// <summary>Device-specific 4-bit dequantization; arguments are validated and n &gt; 0.</summary>
    protected abstract void Dequantize4BitCore(Tensor packed, QuantType quantType, FourBitScales scales, Tensor output,
        long n, int blocksize);

    /// <summary>Device-specific 4-bit GEMV; arguments are validated, rows &gt; 0 and k &gt; 0.</summary>
    protected abstract void Gemv4BitCore(Tensor x, Tensor packed, QuantType quantType, FourBitScales scales, Tensor output,
        long rows, long k, int blocksize);

    /// <summary>Device-specific int8 GEMM (output [m, n] = A [m, k] · B [n, k]ᵀ); arguments are validated, all sizes &gt; 0.</summary>
    protected abstract void Int8LinearMatmulCore(Tensor A, Tensor B, Tensor output, long m, long n, long k);

    /// <summary>
    /// output [m, n] = A·Bᵀ through f64 on A's device. Exact: every product is an integer of magnitude ≤ 2^14 and every partial
    /// sum ≤ K·2^14 &lt; 2^31 (K is checked), so each f64 operation is exact whatever the summation order.
    /// </summary>
    protected static void Int8MatmulThroughF64(Tensor A, Tensor B, Tensor output, long m, long n)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var scope = NewDisposeScope();
        var prod = A.to_type(ScalarType.Float64).matmul(B.to_type(ScalarType.Float64).t());
        output.view(m, n).copy_(prod.to_type(ScalarType.Int32));
    }

    /// <summary>Device-specific deterministic mean; arguments are validated.</summary>
    protected abstract void MeanCore(Tensor x, Tensor output, long n);

    /// <summary>Device-specific int8 row-wise quantization; arguments are validated and non-empty.</summary>
    protected abstract void Int8VectorwiseQuantCore(Tensor A, float threshold, Tensor output, Tensor rowStats, long rows,
        long cols);

    private void CheckScales(FourBitScales scales, long blocks, Tensor reference)
    {
        if (scales.IsNested)
        {
            CheckBlocksize(scales.NestedBlocksize, nameof(scales) + ".NestedBlocksize");
            CheckTensor(scales.QAbsmax!, nameof(scales) + ".QAbsmax", ScalarType.Byte, blocks, reference);
            CheckTensor(scales.NestedAbsmax!, nameof(scales) + ".NestedAbsmax", ScalarType.Float32,
                Blocks(blocks, scales.NestedBlocksize), reference);
            CheckTensor(scales.NestedCode!, nameof(scales) + ".NestedCode", ScalarType.Float32, 256, reference);
            CheckTensor(scales.Offset!, nameof(scales) + ".Offset", ScalarType.Float32, 1, reference);
        }
        else
        {
            CheckTensor(scales.Absmax!, nameof(scales) + ".Absmax", ScalarType.Float32, blocks, reference);
        }
    }

    private long CheckFloatInput(Tensor t, string name)
    {
        if (t is null)
        {
            throw new ArgumentNullException(name);
        }

        if (t.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            throw new ArgumentException($"{name} must be float32, bfloat16 or float16; got {t.dtype}.", name);
        }

        CheckPlacement(t, name);
        return t.numel();
    }

    private void CheckTensor(Tensor t, string name, ScalarType dtype, long numel, Tensor reference)
    {
        if (t is null)
        {
            throw new ArgumentNullException(name);
        }

        if (t.dtype != dtype)
        {
            throw new ArgumentException($"{name} must be {dtype}; got {t.dtype}.", name);
        }

        if (t.numel() != numel)
        {
            throw new ArgumentException($"{name} must have {numel} elements; got {t.numel()} (shape [{string.Join(", ", t.shape)}]).", name);
        }

        CheckPlacement(t, name);
        if (t.device_type != reference.device_type || t.device_index != reference.device_index)
        {
            throw new ArgumentException($"{name} is on {t.device} but the other tensors are on {reference.device}.", name);
        }
    }

    private void CheckPlacement(Tensor t, string name)
    {
        if (t.device_type != DeviceType)
        {
            throw new ArgumentException($"{name} is on {t.device}, but the {Name} backend serves {DeviceType} tensors.", name);
        }

        if (!t.is_contiguous())
        {
            throw new ArgumentException($"{name} must be contiguous; call .contiguous() first.", name);
        }
    }

    private static void CheckBlocksize(int blocksize, string name)
    {
        if (!IsSupportedBlocksize(blocksize))
        {
            throw new ArgumentException($"{name} must be a power of two from 32 to 4096; got {blocksize}.", name);
        }
    }

    private static void CheckQuantType(QuantType quantType)
    {
        if (quantType is not (QuantType.FP4 or QuantType.NF4))
        {
            throw new ArgumentException($"quantType must be FP4 or NF4; got {(int)quantType}.", nameof(quantType));
        }
    }
}
