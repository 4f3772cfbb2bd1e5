using TorchSharp;

namespace BnbDist.Backends;

/// <summary>
/// One implementation of every quantization op for one device type. Callers pass preallocated, contiguous
/// tensors on that device; implementations validate every argument before touching memory.
/// </summary>
public interface IQuantBackend
{
    /// <summary>Short name for logs ("cpu", "cuda").</summary>
    string Name { get; }

    /// <summary>The device type whose tensors this backend serves.</summary>
    DeviceType DeviceType { get; }

    /// <summary>8-bit blockwise quantization with a 256-entry code (bitsandbytes <c>quantize_blockwise</c>).</summary>
    /// <param name="A">Input, f32/bf16/f16, n elements.</param>
    /// <param name="code">Ascending f32[256] code book.</param>
    /// <param name="subOffset">Optional f32[1] subtracted from every element first (double quant of absmax).</param>
    /// <param name="absmax">Output f32[ceil(n/blocksize)].</param>
    /// <param name="output">Output u8[n] codes.</param>
    /// <param name="blocksize">Power of two, 32..4096.</param>
    void QuantizeBlockwise(torch.Tensor A, torch.Tensor code, torch.Tensor? subOffset, torch.Tensor absmax,
        torch.Tensor output, int blocksize);

    /// <summary>output[i] = code[A[i]]·absmax[i / blocksize], in output's dtype.</summary>
    void DequantizeBlockwise(torch.Tensor A, torch.Tensor code, torch.Tensor absmax, torch.Tensor output, int blocksize);

    /// <summary>4-bit NF4/FP4 quantization: packed u8[(n+1)/2] (high nibble first) and f32 absmax per block.</summary>
    void Quantize4Bit(torch.Tensor A, QuantType quantType, torch.Tensor absmax, torch.Tensor packed, int blocksize);

    /// <summary>4-bit dequantization of n = output.numel() elements.</summary>
    void Dequantize4Bit(torch.Tensor packed, QuantType quantType, FourBitScales scales, torch.Tensor output, int blocksize);

    /// <summary>
    /// 4-bit GEMV for one input row (bitsandbytes <c>gemv_4bit</c>): output[n] = Σ_k x[k]·W[n, k] for the [rows, k] weight
    /// packed as by <see cref="Quantize4Bit"/>, accumulated in f32 (CUDA) or f64 (CPU reference) and rounded to x's dtype.
    /// </summary>
    /// <param name="x">The input row, k elements of f32/bf16/f16.</param>
    /// <param name="packed">Packed u8[(rows·k + 1)/2].</param>
    /// <param name="quantType">NF4 or FP4.</param>
    /// <param name="scales">Plain or nested absmax of the ceil(rows·k / blocksize) blocks.</param>
    /// <param name="output">rows elements of x's dtype.</param>
    /// <param name="blocksize">Power of two, 32..4096.</param>
    void Gemv4Bit(torch.Tensor x, torch.Tensor packed, QuantType quantType, FourBitScales scales, torch.Tensor output,
        int blocksize);

    /// <summary>
    /// int8 × int8ᵀ → int32 (bitsandbytes <c>int8_linear_matmul</c>): output [M, N] = A [M, K] · B [N, K]ᵀ, exact
    /// (K ≤ <see cref="QuantBackendBase.MaxInt8MatmulK"/>, so no sum can leave the int32 range).
    /// </summary>
    void Int8LinearMatmul(torch.Tensor A, torch.Tensor B, torch.Tensor output);

    /// <summary>Deterministic mean of f32 values into output f32[1]: (float)(chunked f64 tree sum) · (1f/n); same bits on every backend.</summary>
    void Mean(torch.Tensor x, torch.Tensor output);

    /// <summary>LLM.int8 row-wise quantization of a 2-D matrix; elements with |x| ≥ threshold (when &gt; 0) become 0.</summary>
    void Int8VectorwiseQuant(torch.Tensor A, float threshold, torch.Tensor output, torch.Tensor rowStats);
}
