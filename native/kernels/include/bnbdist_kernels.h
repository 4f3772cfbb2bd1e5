// BnbDist CUDA kernels: the C ABI that src/Backends binds with P/Invoke.
//
// Conventions (all functions):
// - Return 0 on success, otherwise a cudaError_t value (or BNBD_ERR_* below); never exit or abort.
//   bnbd_error_string(code) gives the text. Launch errors are checked (cudaGetLastError) after every launch.
// - All data pointers are device pointers. `stream` is a cudaStream_t; NULL is the legacy default stream,
//   which TorchSharp's own ops use, so kernels on NULL are ordered with them.
// - Functions are asynchronous on `stream` unless stated; they never synchronize the device.
// - The caller (C#) validates shapes, dtypes, sizes and blocksizes; kernels may still reject bad arguments
//   with BNBD_ERR_INVALID_ARGUMENT but must never read or write out of bounds for valid ones.
// - dtype codes for float tensors: BNBD_F32 = 0, BNBD_BF16 = 1, BNBD_F16 = 2.
// - quant_type codes for 4-bit: BNBD_FP4 = 0, BNBD_NF4 = 1.
//
// Numerical contract (shared with the C# CPU backend, which must give the same bits):
// - Element values are upcast to f32 exactly. Block b covers elements [b*bs, min(n,(b+1)*bs)).
// - absmax[b] = max |x| over the block, ignoring NaN (fmaxf semantics); 0 for an all-zero block.
// - inv = 1.0f / absmax[b], IEEE round-to-nearest (no fast-math reciprocal), and xn = x * inv (RN).
// - 8-bit code search: code is 256 ascending f32 values. mid[j] = ((code[j] + code[j+1]) RN) * 0.5f for
//   j = 0..254. The index is the nearest code by these midpoints: idx = number of j with xn > mid[j],
//   except that when xn == mid[j] exactly, idx = whichever of j, j+1 is even (if several midpoints equal xn,
//   which needs repeated code values, the lowest such j decides). NaN xn gives idx 0.
//   (Values beyond the ends clamp to 0 / 255 by this rule.)
// - 4-bit NF4: code = number of the 15 NF4 thresholds (bnbd_nf4_thresholds in src/codebooks.cuh, f32) that xn
//   strictly exceeds (NaN -> 0). FP4: sign bit 8 if xn < 0; on |xn| the thresholds
//   > 0.8333333 -> 3, > 0.583333 -> 2, > 0.4166667 -> 5, > 0.29166667 -> 4, > 0.20833333 -> 7,
//   > 0.0859375 -> 6, > 0.00260417 -> 1, else 0 (f32 constants, strict >). Packing: byte j =
//   (code[2j] << 4) | code[2j+1]; for odd n the last low nibble is the code of 0.0 (NF4 7, FP4 0).
// - Dequant: out = f32(table[code] * absmax[b]) (RN, no FMA) cast to the output dtype with RN.
//   The FP4 dequant table has -0.0 at index 8 (bitsandbytes' CUDA LUT computes 0 * -1).
// - Double-quant absmax: a = ((nested_code[q[i]] * nested_absmax[i / nested_bs]) RN + offset) RN.
// - Deterministic mean (bnbd_mean_f32): values are widened to f64; chunk c holds elements
//   [1024c, 1024c+1024), zero-padded to 1024; P_c = tree sum with s[i] += s[i + stride] for
//   stride = 512, 256, ..., 1 (in f64); S = sum of P_c for c = 0, 1, ... sequentially in f64;
//   mean = (float)S * (1.0f / (float)n), each step in f32 with RN (torch's mean multiplies the sum by an f32
//   1/n factor; this reproduces bitsandbytes' offsets bit for bit). n == 0 gives 0.
#ifndef BNBDIST_KERNELS_H
#define BNBDIST_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BNBD_API __declspec(dllexport)
#else
#define BNBD_API __attribute__((visibility("default")))
#endif

enum { BNBD_F32 = 0, BNBD_BF16 = 1, BNBD_F16 = 2 };
enum { BNBD_FP4 = 0, BNBD_NF4 = 1 };
enum { BNBD_ERR_INVALID_ARGUMENT = 100001 };

/// ABI version of this header; the C# side refuses a library with another version.
/// 2: added the optimizer updates (bnbd_optimizer_8bit_blockwise, bnbd_optimizer_32bit).
/// 3: added the 4-bit GEMV (bnbd_gemv_4bit).
#define BNBD_ABI_VERSION 3
BNBD_API int bnbd_abi_version(void);

/// Text for a return code (cudaGetErrorString for CUDA codes). Never NULL.
BNBD_API const char* bnbd_error_string(int code);

/// 8-bit blockwise quantization with a 256-entry ascending code (bitsandbytes quantize_blockwise).
/// A: n elements of `dtype`. If sub_offset is not NULL (device f32[1]), x = f32(A[i]) - *sub_offset (RN)
/// is quantized instead (double quant of absmax). absmax: ceil(n/bs) f32. out: n bytes.
/// blocksize: 32..4096, power of two.
BNBD_API int bnbd_quantize_blockwise(int dtype, const float* code, const void* A, const float* sub_offset,
                                     float* absmax, uint8_t* out, int64_t n, int blocksize, void* stream);

/// out[i] = f32(code[A[i]] * absmax[i / bs]) cast to dtype.
BNBD_API int bnbd_dequantize_blockwise(int dtype, const float* code, const uint8_t* A, const float* absmax,
                                       void* out, int64_t n, int blocksize, void* stream);

/// 4-bit NF4/FP4 blockwise quantization. out: (n+1)/2 bytes; absmax: ceil(n/bs) f32.
/// blocksize: 32..4096, power of two.
BNBD_API int bnbd_quantize_4bit(int dtype, int quant_type, const void* A, float* absmax, uint8_t* out,
                                int64_t n, int blocksize, void* stream);

/// 4-bit dequantization into n elements of dtype. Exactly one of absmax (f32 per block) or the nested set
/// (qabsmax u8 per block, nested_absmax f32 per nested block, nested_code f32[256], offset f32[1],
/// nested_blocksize) is given; the other pointers are NULL.
BNBD_API int bnbd_dequantize_4bit(int dtype, int quant_type, const uint8_t* A, const float* absmax,
                                  const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                                  const float* offset, int nested_blocksize, void* out, int64_t n,
                                  int blocksize, void* stream);

/// 4-bit GEMV for one input row (inference decode): y[n] = sum_k x[k] * W[n, k] for n < n_rows, where W is the
/// row-major [n_rows, k] matrix packed as by bnbd_quantize_4bit (element e = n * k + j in nibble e of the packed
/// bytes, high nibble first; block e / blocksize) and dequantized as bnbd_dequantize_4bit does (plain or nested
/// absmax, same pointer rules). x: k elements of dtype; y: n_rows elements of dtype. blocksize: 32..4096, power of
/// two. Not bit-exact: products are accumulated in f32 with FMAs, the table value times x summed over each run of
/// 32 elements and the run's sum scaled by the block's absmax once, lanes combined by a shuffle tree; the result
/// lies within about (k / 32 + 40) * 2^-24 * sum_k |x[k] * w[n, k]| of the exact dot product of x with the
/// f32-dequantized weight, before the final RN to dtype. Fast path: k % 32 == 0 and x, W 16-byte aligned; any other
/// k or alignment is correct but slower. k == 0 gives zeros.
BNBD_API int bnbd_gemv_4bit(int dtype, int quant_type, const void* x, const uint8_t* W, const float* absmax,
                            const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                            const float* offset, int nested_blocksize, void* y, int64_t n_rows, int64_t k,
                            int blocksize, void* stream);

/// Bytes of device workspace bnbd_mean_f32 needs for n values (8-byte aligned; uninitialized memory will do;
/// one call in flight per workspace at a time).
BNBD_API int64_t bnbd_mean_workspace_bytes(int64_t n);
/// Deterministic mean of n f32 values into out (f32[1]), exactly as defined above.
BNBD_API int bnbd_mean_f32(const float* x, int64_t n, float* out, void* workspace, void* stream);

/// LLM.int8 row-wise quantization of a row-major [rows, cols] matrix of dtype.
/// row_stats[r] = max |x| over the row, over elements with |x| < threshold when threshold > 0 (NaN ignored).
/// scale = 127.0f / row_stats[r] (IEEE), q = round-half-even(x * scale (RN)) saturated to [-127, 127] as int8
/// (saturation only matters when 127 / absmax overflows to inf, i.e. absmax < 127 / FLT_MAX); elements with
/// |x| >= threshold (threshold > 0) are written as 0; NaN products (NaN x, 0 * inf) give 0, so a row with
/// absmax 0 gives q = 0.
BNBD_API int bnbd_int8_vectorwise_quant(int dtype, const void* A, int8_t* out, float* row_stats, int64_t rows,
                                        int64_t cols, float threshold, void* stream);

// ---------------------------------------------------------------------------------------------------------
// Optimizer updates (bitsandbytes' 8-bit blockwise optimizers and their 32-bit forms), many tensors per launch.
//
// Numerical contract: exactly the C# CPU kernels of src/Optim8bit/Kernels (Adam8bitBlockwise, OneState8bitBlockwise,
// TwoState32bit, OneState32bit, StateQuantizer, ParamRounding), element by element; fma() is a single-rounding fused
// multiply-add, every other operation rounds once (RN), a * b * c means (a * b) * c, and R(x) rounds x to the
// parameter's dtype (RN; identity for f32) and widens it back, where bitsandbytes stores an intermediate in the
// parameter type. Parameters and gradients are upcast exactly. State blocks are 256 elements (block b covers
// elements [256b, min(n, 256b + 256))). Per element of the 8-bit rules, with m0 = qmap1[s1] * absmax1[b] (and
// v0 = qmap2[s2] * absmax2[b]):
//   ADAM:     a non-finite g sets m = v = 0, leaves p alone and is left out of the block maxima; otherwise
//             m = fma(m0, beta1, (1 - beta1) * g); v = fma(v0, beta2, (1 - beta2) * g * g);
//             p = R(fma(step_size, m / fma(correction2, eps, sqrt(v)), p)); then p = R(p * decay) if weight_decay > 0.
//   MOMENTUM: if weight_decay > 0: g = fma(weight_decay, p, g); s = step == 1 ? g : fma(m0, beta1, g);
//             p = R(fma(-lr, s, p)).
//   LION:     if weight_decay > 0: p = R(p * decay); u = R(lr * sgn(fma(m0, beta1, (1 - beta1) * g)));
//             s = fma(m0, beta2, (1 - beta2) * g); p = R(p - u)   (sgn: -1, 0, +1; 0 for NaN).
//   RMSPROP:  r = g; if weight_decay > 0: g = fma(weight_decay, p, g); s = fma(m0, beta1, (1 - beta1) * (g * g));
//             p = R(fma(-lr, r / (sqrt(s) + eps), p)).
// Block maxima: M = fmaxf over |state| of the counted elements (NaN ignored; 0 for none), stored as FLT_MAX if it
// is +inf, and written over the old absmax. Requantization: mid[j] = (qmap[j] + qmap[j+1]) * 0.5f;
// code(x) = #{j : mid[j] <= x} (ties go up; NaN -> 0). State 1: c = code(s / M1); if signbit(qmap1[c]) != signbit(s),
// c += (s > 0 ? 1 : -1), modulo 256. State 2 (Adam): c = code(v / M2). (A NaN state has the sign of the platform's
// NaN, positive on the GPU and often negative on x86, so its code may differ from the CPU kernels'.)
// 32-bit states (bnbd_optimizer_32bit), f32 s (and v):
//   ADAM:     m = fma(m, beta1, (1 - beta1) * g); v = fma(v, beta2, (1 - beta2) * g * g);
//             p = R(fma(step_size, m / fma(eps, correction2, sqrt(v)), p)); then R(p * decay) if weight_decay > 0.
//   others:   if weight_decay > 0 and not LION: g = R(fma(p, weight_decay, g)); then
//             MOMENTUM: s = step == 1 ? g : fma(s, beta1, g); p = R(p + (-lr * s)).
//             LION:     p = R(fma(p, decay, -lr * sgn(fma(s, beta1, (1 - beta1) * g)))); s = fma(s, beta2, (1 - beta2) * g).
//             RMSPROP:  s = fma(s, beta1, (1 - beta1) * g * g); p = R(p - lr * (g / (sqrt(s) + eps))).
// The caller computes the step-dependent scalars on the host exactly as the CPU kernels do:
// correction2 = sqrt(1 - beta2^step), step_size = -lr * correction2 / (1 - beta1^step), decay = fma(-lr, weight_decay, 1).

enum { BNBD_OPTIM_ADAM = 0, BNBD_OPTIM_MOMENTUM = 1, BNBD_OPTIM_LION = 2, BNBD_OPTIM_RMSPROP = 3 };

/// One tensor of a multi-tensor optimizer launch (64 bytes; an array of these lives in device memory).
typedef struct bnbd_optim_tensor {
    void* param;           /* numel elements of the launch's dtype, updated in place */
    const void* grad;      /* numel elements of the same dtype */
    void* state1;          /* 8-bit: numel uint8 codes; 32-bit: numel f32 */
    void* state2;          /* likewise for the second state; NULL for 1-state rules */
    float* absmax1;        /* 8-bit: ceil(numel / 256) f32; NULL for 32-bit */
    float* absmax2;        /* 8-bit Adam only, else NULL */
    int64_t numel;         /* >= 1 */
    int64_t block_offset;  /* sum of ceil(numel_k / 256) over the tensors k before this one */
} bnbd_optim_tensor;

/// Hyperparameters of one step (host struct, passed by pointer and copied into the launch).
typedef struct bnbd_optim_hparams {
    float beta1;         /* Adam beta1; momentum; Lion beta1; RMSprop alpha */
    float beta2;         /* Adam beta2; Lion beta2 */
    float eps;
    float lr;
    float weight_decay;
    float step_size;     /* Adam: -lr * correction2 / (1 - beta1^step) */
    float correction2;   /* Adam: sqrt(1 - beta2^step) */
    float decay;         /* fma(-lr, weight_decay, 1) */
    int32_t step;        /* 1 for the first step */
    int32_t reserved;    /* 0 */
} bnbd_optim_hparams;

/// One step of an 8-bit blockwise optimizer over num_tensors tensors of one dtype in one launch. tensors: device
/// array in block_offset order; total_blocks = the last tensor's block_offset + ceil(numel / 256). qmap1: the signed
/// dynamic map (256 ascending f32, device); qmap2: the unsigned one (Adam) or NULL.
BNBD_API int bnbd_optimizer_8bit_blockwise(int rule, int dtype, const bnbd_optim_tensor* tensors, int num_tensors,
                                           int64_t total_blocks, const float* qmap1, const float* qmap2,
                                           const bnbd_optim_hparams* hp, void* stream);

/// One step of a 32-bit optimizer over num_tensors tensors (state1 = f32 first state, state2 = f32 second state for
/// Adam or NULL; absmax unused).
BNBD_API int bnbd_optimizer_32bit(int rule, int dtype, const bnbd_optim_tensor* tensors, int num_tensors,
                                  int64_t total_blocks, const bnbd_optim_hparams* hp, void* stream);

#ifdef __cplusplus
}
#endif
#endif
