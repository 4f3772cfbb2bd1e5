using BnbDist.Backends;
using static TorchSharp.torch;

namespace BnbDist;

/// <summary>
/// bitsandbytes' functional quantization API in C#: blockwise 8-bit, 4-bit NF4/FP4 with double quantization, and
/// LLM.int8 row-wise quantization. Ops run on the backend of their tensors' device (CPU or CUDA).
/// </summary>
public static partial class Functional
{
    /// <summary>Block size of the nested (double) quantization of 4-bit absmax, as in bitsandbytes.</summary>
    public const int NestedBlocksize4Bit = 256;

    /// <summary>
    /// Blockwise 8-bit quantization (bitsandbytes <c>quantize_blockwise</c>): per block of <paramref name="blocksize"/>
    /// elements, absmax scaling and the nearest entry of a 256-value <paramref name="code"/> (default: the signed dynamic map).
    /// </summary>
    /// <param name="A">float32, bfloat16 or float16 tensor, any shape (contiguous).</param>
    /// <param name="code">f32[256] ascending code book on A's device; null for the signed dynamic map.</param>
    /// <param name="blocksize">Power of two from 32 to 4096 (bitsandbytes' default 4096).</param>
    /// <param name="nested">Also quantize the absmax (offset = its mean; same block size), as bitsandbytes' <c>nested=True</c>.</param>
    /// <param name="absmax">Optional preallocated f32[ceil(n/blocksize)] output.</param>
    /// <param name="out">Optional preallocated u8 output with A's number of elements.</param>
    /// <returns>u8 codes with A's shape, and the state needed to dequantize.</returns>
    public static (Tensor Quantized, QuantState State) QuantizeBlockwise(Tensor A, Tensor? code = null, int blocksize = 4096,
        bool nested = false, Tensor? absmax = null, Tensor? @out = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        CheckBlocksize(blocksize, nameof(blocksize));
        var backend = QuantBackends.For(A.device);
        code ??= CodeBooks.SharedDynamicMap(true, A.device);
        var n = A.numel();
        var ownAbsmax = absmax is null;
        absmax ??= empty(QuantBackendBase.Blocks(n, blocksize), ScalarType.Float32, A.device);
        @out ??= empty(A.shape, ScalarType.Byte, A.device);
        CheckShape(@out, A.shape, nameof(@out));
        backend.QuantizeBlockwise(A, code, null, absmax, @out, blocksize);

        if (!nested)
        {
            return (@out, new QuantState(absmax, A.shape, A.dtype, blocksize, code));
        }

        var (qabsmax, offset, state2) = QuantizeAbsmax(backend, absmax, blocksize);
        if (ownAbsmax)
        {
            absmax.Dispose();
        }

        return (@out, new QuantState(qabsmax, A.shape, A.dtype, blocksize, code, null, offset, state2));
    }

    /// <summary>Inverse of <see cref="QuantizeBlockwise"/>: code[A]·absmax in the state's dtype and shape.</summary>
    /// <param name="A">u8 codes.</param>
    /// <param name="state">The state returned with them.</param>
    /// <param name="out">Optional preallocated output of the state's dtype and number of elements.</param>
    public static Tensor DequantizeBlockwise(Tensor A, QuantState state, Tensor? @out = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        ArgumentNullException.ThrowIfNull(state);
        var backend = QuantBackends.For(A.device);
        var absmax = state.Nested ? DequantizeAbsmax(backend, state) : state.Absmax;
        @out ??= empty([.. state.Shape], state.DType, A.device);
        backend.DequantizeBlockwise(A, state.Code, absmax, @out, state.BlockSize);
        return @out;
    }

    /// <summary>Dequantizes 8-bit codes from a raw absmax (bitsandbytes' <c>dequantize_blockwise(A, absmax=..., code=...)</c>).</summary>
    public static Tensor DequantizeBlockwise(Tensor A, Tensor absmax, Tensor? code = null, int blocksize = 4096,
        ScalarType dtype = ScalarType.Float32, Tensor? @out = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        CheckBlocksize(blocksize, nameof(blocksize));
        var backend = QuantBackends.For(A.device);
        code ??= CodeBooks.SharedDynamicMap(true, A.device);
        @out ??= empty(A.shape, dtype, A.device);
        backend.DequantizeBlockwise(A, code, absmax, @out, blocksize);
        return @out;
    }

    /// <summary>
    /// 4-bit blockwise quantization (bitsandbytes <c>quantize_4bit</c>): NF4 or FP4 codes, two per byte (element 2i in
    /// the high nibble), shape [(n+1)/2, 1].
    /// </summary>
    /// <param name="A">float32, bfloat16 or float16 tensor (contiguous).</param>
    /// <param name="blocksize">Power of two from 32 to 4096 (default 64).</param>
    /// <param name="compressStatistics">Double quantization: absmax − mean quantized to 8 bits in blocks of 256.</param>
    /// <param name="quantType">NF4 or FP4 (bitsandbytes' default is FP4).</param>
    /// <param name="absmax">Optional preallocated f32 absmax output (plain statistics only).</param>
    /// <param name="out">Optional preallocated u8 output of (n+1)/2 elements.</param>
    public static (Tensor Packed, QuantState State) Quantize4Bit(Tensor A, int blocksize = 64, bool compressStatistics = false,
        QuantType quantType = QuantType.FP4, Tensor? absmax = null, Tensor? @out = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        CheckBlocksize(blocksize, nameof(blocksize));
        var backend = QuantBackends.For(A.device);
        var n = A.numel();
        var ownAbsmax = absmax is null;
        absmax ??= empty(QuantBackendBase.Blocks(n, blocksize), ScalarType.Float32, A.device);
        @out ??= empty([(n + 1) / 2, 1], ScalarType.Byte, A.device);
        backend.Quantize4Bit(A, quantType, absmax, @out, blocksize);
        var code = CodeBooks.SharedFourBit(quantType, A.device);
        if (!compressStatistics)
        {
            return (@out, new QuantState(absmax, A.shape, A.dtype, blocksize, code, quantType));
        }

        var (qabsmax, offset, state2) = QuantizeAbsmax(backend, absmax, NestedBlocksize4Bit);
        if (ownAbsmax)
        {
            absmax.Dispose(); // the f32 absmax lives on only in quantized form
        }

        return (@out, new QuantState(qabsmax, A.shape, A.dtype, blocksize, code, quantType, offset, state2));
    }

    /// <summary><see cref="Quantize4Bit"/> with NF4.</summary>
    public static (Tensor Packed, QuantState State) QuantizeNF4(Tensor A, int blocksize = 64, bool compressStatistics = false) =>
        Quantize4Bit(A, blocksize, compressStatistics, QuantType.NF4);

    /// <summary><see cref="Quantize4Bit"/> with FP4.</summary>
    public static (Tensor Packed, QuantState State) QuantizeFP4(Tensor A, int blocksize = 64, bool compressStatistics = false) =>
        Quantize4Bit(A, blocksize, compressStatistics, QuantType.FP4);

    /// <summary>Inverse of <see cref="Quantize4Bit"/>: a tensor of the state's shape and dtype.</summary>
    /// <param name="A">Packed u8 codes.</param>
    /// <param name="state">A 4-bit state (QuantType set).</param>
    /// <param name="out">Optional preallocated output of the state's dtype and number of elements.</param>
    public static Tensor Dequantize4Bit(Tensor A, QuantState state, Tensor? @out = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        ArgumentNullException.ThrowIfNull(state);
        if (state.QuantType is not QuantType quantType)
        {
            throw new ArgumentException("state is an 8-bit state (no QuantType); use DequantizeBlockwise.", nameof(state));
        }

        var backend = QuantBackends.For(A.device);
        @out ??= empty([.. state.Shape], state.DType, A.device);
        backend.Dequantize4Bit(A, quantType, ScalesOf(state), @out, state.BlockSize);
        return @out;
    }

    /// <summary>
    /// LLM.int8 row-wise quantization (bitsandbytes <c>int8_vectorwise_quant</c>): int8 = round(x·127/rowAbsmax).
    /// With <paramref name="threshold"/> &gt; 0, values with |x| ≥ threshold are left out of the row absmax, and
    /// every column holding one (an outlier column) is zeroed in the int8 output when there is more than one row.
    /// </summary>
    /// <param name="A">2-D (or more, flattened to rows) float tensor.</param>
    /// <param name="threshold">Outlier threshold; 0 disables outlier handling.</param>
    /// <returns>int8 codes of A's shape, f32 row absmax, and the outlier column indices (int64; null when threshold is 0).</returns>
    public static (Tensor Quantized, Tensor RowStats, Tensor? OutlierCols) Int8VectorwiseQuant(Tensor A, float threshold = 0f)
    {
        ArgumentNullException.ThrowIfNull(A);
        if (A.dim() < 1)
        {
            throw new ArgumentException("A must have at least one dimension.", nameof(A));
        }

        var backend = QuantBackends.For(A.device);
        var cols = A.shape[^1];
        var rows = cols == 0 ? 0 : A.numel() / cols;
        using var a2 = A.reshape(rows, cols);
        var q = empty(A.shape, ScalarType.Int8, A.device);
        var rowStats = empty(rows, ScalarType.Float32, A.device);
        using (var q2 = q.view(rows, cols))
        {
            backend.Int8VectorwiseQuant(a2, threshold, q2, rowStats);
        }

        Tensor? outlierCols = null;
        if (threshold > 0f)
        {
            using var mask = a2.abs().ge(threshold).any(0L);
            outlierCols = mask.nonzero().flatten();
            if (rows > 1 && outlierCols.numel() > 0)
            {
                using var q2 = q.view(rows, cols);
                q2.index_fill_(1, outlierCols, 0);
            }
        }

        return (q, rowStats, outlierCols);
    }

    /// <summary>Inverse of <see cref="Int8VectorwiseQuant"/>: A·stats·(1/127) as float32, computed as bitsandbytes does.</summary>
    public static Tensor Int8VectorwiseDequant(Tensor A, Tensor stats)
    {
        ArgumentNullException.ThrowIfNull(A);
        ArgumentNullException.ThrowIfNull(stats);
        if (A.dtype != ScalarType.Int8)
        {
            throw new ArgumentException($"A must be int8; got {A.dtype}.", nameof(A));
        }

        var rows = A.numel() / Math.Max(1, A.shape[^1]);
        if (stats.numel() != rows)
        {
            throw new ArgumentException($"stats must have one value per row ({rows}); got {stats.numel()}.", nameof(stats));
        }

        using var s = stats.to_type(ScalarType.Float32).view(-1, 1);
        using var a = A.reshape(rows, -1).to_type(ScalarType.Float32);
        using var prod = a * s;
        return prod.mul(7.874015718698502e-3).to_type(ScalarType.Float32).reshape(A.shape);
    }

    /// <summary>
    /// int8 × int8ᵀ → int32 (bitsandbytes' <c>int8_linear_matmul</c>): A [..., K] · B [N, K]ᵀ → [..., N], exact. On CUDA through
    /// cuBLASLt's int8 tensor-core GEMM (K and N multiples of 4; other shapes through an exact f64 matmul), on the CPU through f64
    /// (exact: see <see cref="QuantBackendBase.MaxInt8MatmulK"/>).
    /// </summary>
    /// <exception cref="ArgumentException">Not int8, B not [N, K], K above <see cref="QuantBackendBase.MaxInt8MatmulK"/>, or the
    /// tensors on different devices.</exception>
    public static Tensor Int8LinearMatmul(Tensor A, Tensor B)
    {
        ArgumentNullException.ThrowIfNull(A);
        ArgumentNullException.ThrowIfNull(B);
        if (A.dtype != ScalarType.Int8 || B.dtype != ScalarType.Int8)
        {
            throw new ArgumentException($"A and B must be int8; got {A.dtype} and {B.dtype}.", A.dtype != ScalarType.Int8 ? nameof(A) : nameof(B));
        }

        if (A.dim() < 1 || B.dim() != 2 || A.shape[^1] != B.shape[1])
        {
            throw new ArgumentException($"B must be [N, K] with K = A's last dimension ({(A.dim() < 1 ? 0 : A.shape[^1])}); got [{string.Join(", ", B.shape)}].", nameof(B));
        }

        var k = A.shape[^1];
        var rows = A.shape.SkipLast(1).Aggregate(1L, (p, d) => p * d);

        var shape = A.shape.ToArray();
        shape[^1] = B.shape[0];
        var output = empty(shape, ScalarType.Int32, A.device);
        using var a2 = A.contiguous().reshape(rows, k);
        using var b2 = B.contiguous();
        using var o2 = output.view(rows, B.shape[0]);
        QuantBackends.For(A.device).Int8LinearMatmul(a2, b2, o2);
        return output;
    }

    /// <summary>
    /// Dequantizes an int8 matmul result (bitsandbytes' <c>int8_mm_dequant</c>): i32 · rowStats · colStats / 127² + bias, as float16.
    /// </summary>
    public static Tensor Int8MmDequant(Tensor A, Tensor rowStats, Tensor colStats, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(A);
        ArgumentNullException.ThrowIfNull(rowStats);
        ArgumentNullException.ThrowIfNull(colStats);
        if (A.dtype != ScalarType.Int32)
        {
            throw new ArgumentException($"A must be int32; got {A.dtype}.", nameof(A));
        }

        var rows = A.numel() / A.shape[^1];
        if (rowStats.numel() != rows || colStats.numel() != A.shape[^1])
        {
            throw new ArgumentException($"rowStats must have {rows} and colStats {A.shape[^1]} elements.", rowStats.numel() != rows ? nameof(rowStats) : nameof(colStats));
        }

        if (A.device_type == TorchSharp.DeviceType.CPU)
        {
            return Int8MmDequantCpu(A, rowStats, colStats, bias);
        }

        // On CUDA, with torch ops: the same products, but the bias is added after rounding the scaled value to f32
        // rather than in one FMA, so an output can differ from bitsandbytes by one fp16 rounding step.
        using var v = A.to_type(ScalarType.Float32).mul(rowStats.to_type(ScalarType.Float32).view(-1, 1)).mul(colStats.to_type(ScalarType.Float32).view(1, -1));
        using var scaled = v.mul(Int8DequantConstant);
        using var withBias = bias is null ? scaled.alias() : scaled.add(bias.to_type(ScalarType.Float16).to_type(ScalarType.Float32));
        return withBias.to_type(ScalarType.Float16);
    }

    /// <summary>bitsandbytes' f32 constant for 1/127² (MM_DEQUANT_CONST).</summary>
    private const float Int8DequantConstant = 6.200012e-05f;

    /// <summary>bitsandbytes' kdequant_mm_int32_fp16 exactly: half(fma((float)v·row·col, 1/127², bias)).</summary>
    private static Tensor Int8MmDequantCpu(Tensor A, Tensor rowStats, Tensor colStats, Tensor? bias)
    {
        var cols = (int)A.shape[^1];
        var rows = (int)(A.numel() / cols);
        var v = A.contiguous().data<int>().ToArray();
        var r = rowStats.to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
        var c = colStats.to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
        float[]? b = null;
        if (bias is not null)
        {
            using var b16 = bias.to_type(ScalarType.Float16).to_type(ScalarType.Float32);
            b = b16.contiguous().data<float>().ToArray();
        }

        var result = new Half[v.Length];
        Parallel.For(0, rows, i =>
        {
            for (var j = 0; j < cols; j++)
            {
                var k = (i * cols) + j;
                result[k] = (Half)MathF.FusedMultiplyAdd((float)v[k] * r[i] * c[j], Int8DequantConstant, b is null ? 0f : b[j]);
            }
        });
        return tensor(result, ScalarType.Float16).reshape(A.shape);
    }

    /// <summary>The deterministic mean of an f32 tensor (the double-quantization offset), identical on CPU and CUDA.</summary>
    public static Tensor DeterministicMean(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        var output = empty(1, ScalarType.Float32, x.device);
        using var flat = x.contiguous().flatten();
        QuantBackends.For(x.device).Mean(flat, output);
        return output;
    }

    private static (Tensor QAbsmax, Tensor Offset, QuantState State2) QuantizeAbsmax(IQuantBackend backend, Tensor absmax, int nestedBlocksize)
    {
        var offset = empty(1, ScalarType.Float32, absmax.device);
        backend.Mean(absmax, offset);
        var code = CodeBooks.SharedDynamicMap(true, absmax.device);
        var blocks = absmax.numel();
        var qabsmax = empty(blocks, ScalarType.Byte, absmax.device);
        var nestedAbsmax = empty(QuantBackendBase.Blocks(blocks, nestedBlocksize), ScalarType.Float32, absmax.device);
        backend.QuantizeBlockwise(absmax, code, offset, nestedAbsmax, qabsmax, nestedBlocksize);
        var scalarOffset = offset.reshape([]);
        return (qabsmax, scalarOffset, new QuantState(nestedAbsmax, [blocks], ScalarType.Float32, nestedBlocksize, code));
    }

    /// <summary>The 4-bit scales a state holds, as the backends take them.</summary>
    private static FourBitScales ScalesOf(QuantState state) => state.Nested
        ? FourBitScales.Nested(state.Absmax, state.State2!.Absmax, state.State2.Code, state.Offset!, state.State2.BlockSize)
        : FourBitScales.Plain(state.Absmax);

    private static Tensor DequantizeAbsmax(IQuantBackend backend, QuantState state)
    {
        var s2 = state.State2!;
        var absmax = empty(state.Absmax.numel(), ScalarType.Float32, state.Absmax.device);
        backend.DequantizeBlockwise(state.Absmax, s2.Code, s2.Absmax, absmax, s2.BlockSize);
        absmax.add_(state.Offset!);
        return absmax;
    }

    private static void CheckBlocksize(int blocksize, string name)
    {
        if (!QuantBackendBase.IsSupportedBlocksize(blocksize))
        {
            throw new ArgumentException($"{name} must be one of 32, 64, 128, 256, 512, 1024, 2048, 4096; got {blocksize}.", name);
        }
    }

    private static void CheckShape(Tensor t, long[] shape, string name)
    {
        if (!t.shape.SequenceEqual(shape))
        {
            throw new ArgumentException($"{name} must have shape [{string.Join(", ", shape)}]; got [{string.Join(", ", t.shape)}].", name);
        }
    }
}
