// 4-bit GEMV for one input row (decode): y[n] = sum_k x[k] * dequant(W)[n, k] (bnbd_gemv_4bit).
//
// The packed weights are read exactly once, so the kernel is bound by memory bandwidth when the instruction
// stream per byte is short enough. Layout of the work (fast path: K % 32 == 0, x and W 16-byte aligned):
// - one warp owns ROWS consecutive output rows; lane l reads 16-byte chunks l, l + 32, ... of each of its rows
//   (32 packed elements each, in one quantization block because blocksize >= 32 and every chunk starts at a
//   multiple of 32 elements), so a warp-wide load is 512 contiguous bytes per row;
// - the chunk's 32 x values are loaded once (read-only path, L1-resident: every warp reads the same x) and used
//   for all ROWS rows, which divides the x traffic and its bf16/f16 -> f32 conversion by ROWS;
// - the 16-entry code book lives in shared memory (16 words in 16 banks: no conflicts); the code of a nibble is
//   turned into a byte offset with two masks per 32-bit word ((w >> 2) & 0x3C3C3C3C for the high nibbles,
//   (w << 2) & 0x3C3C3C3C for the low ones) and one byte extract per element;
// - per chunk p = sum x[k] * table[code] in f32 (two partial sums), then acc = fma(p, scale, acc): the scale is
//   applied once per chunk, so each element costs one extract, one shared load and one FMA;
// - the lanes' sums are combined with a warp shuffle tree and lane 0 stores y[n] (RN to x's dtype).
// Weights are loaded with the evict-first hint (read once), x with the default (cached) one.
// Anything else (odd K, unaligned pointers) takes a plain element loop per warp: correct, not fast.
//
// Numerics: f32 accumulation with FMA; the order differs from a sequential sum, so results match an exact
// (f64) dot product of x with the f32-dequantized weight within a few f32 roundings per term (see the header).
#include "codebooks.cuh"
#include "common.cuh"
#include "scale4.cuh"

namespace bnbd {

// Test hook (not exported): rows per warp, 0 = automatic.
int g_gemv_rows = 0;

namespace {

constexpr int GEMV_THREADS = 128;  // 4 warps per CTA: small CTAs keep the SMs evenly loaded
constexpr int GEMV_WARPS = GEMV_THREADS / 32;

// 32 x values of a chunk as f32, from 16-byte loads through the read-only path.
template <int DT> struct XChunk;
template <> struct XChunk<BNBD_F32> {
    __device__ __forceinline__ static void load(const void* x, int64_t k0, float* v) {
        const uint4* p = reinterpret_cast<const uint4*>(static_cast<const float*>(x) + k0);
#pragma unroll
        for (int i = 0; i < 8; ++i) DType<BNBD_F32>::unpack(__ldg(p + i), v + 4 * i);
    }
};
template <int DT> struct XChunk16 {
    __device__ __forceinline__ static void load(const void* x, int64_t k0, float* v) {
        const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + k0);
#pragma unroll
        for (int i = 0; i < 4; ++i) DType<DT>::unpack(__ldg(p + i), v + 8 * i);
    }
};
template <> struct XChunk<BNBD_BF16> : XChunk16<BNBD_BF16> {};
template <> struct XChunk<BNBD_F16> : XChunk16<BNBD_F16> {};

// table[code] by a byte offset (code * 4) into the shared table
__device__ __forceinline__ float lut_at(const float* s_lut, uint32_t byte_offset) {
    return *reinterpret_cast<const float*>(reinterpret_cast<const char*>(s_lut) + byte_offset);
}

// sum over the 32 elements of one 16-byte chunk of x[k] * table[code[k]] (element 2j: high nibble of byte j)
__device__ __forceinline__ float chunk_dot(const uint4& q, const float* xv, const float* s_lut) {
    float p0 = 0.0f, p1 = 0.0f;
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t hi = (w[i] >> 2) & 0x3C3C3C3Cu;  // byte j: 4 * high nibble of byte j
        const uint32_t lo = (w[i] << 2) & 0x3C3C3C3Cu;  // byte j: 4 * low nibble
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const uint32_t oh = j == 3 ? hi >> 24 : (hi >> (8 * j)) & 0xFFu;
            const uint32_t ol = j == 3 ? lo >> 24 : (lo >> (8 * j)) & 0xFFu;
            p0 = __fmaf_rn(xv[8 * i + 2 * j], lut_at(s_lut, oh), p0);
            p1 = __fmaf_rn(xv[8 * i + 2 * j + 1], lut_at(s_lut, ol), p1);
        }
    }
    return __fadd_rn(p0, p1);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}

template <int DT, bool NESTED, int ROWS, bool FAST>
__global__ void __launch_bounds__(GEMV_THREADS)
    gemv4_kernel(int quant_type, const void* __restrict__ x, const uint8_t* __restrict__ W, Scale4 sc,
                 void* __restrict__ y, int64_t N, int64_t K) {
    using Tr = DType<DT>;
    __shared__ float s_lut[16];
    __shared__ float s_code[NESTED ? 256 : 1];
    if (threadIdx.x < 16)
        s_lut[threadIdx.x] = quant_type == BNBD_NF4 ? bnbd_nf4_table[threadIdx.x] : bnbd_fp4_table[threadIdx.x];
    if (NESTED) {
        for (int j = threadIdx.x; j < 256; j += blockDim.x) s_code[j] = __ldg(sc.nested_code + j);
        sc.offset = __ldg(sc.offset_ptr);
    }
    __syncthreads();

    const int lane = threadIdx.x & 31;
    const int64_t row0 = (int64_t(blockIdx.x) * GEMV_WARPS + (threadIdx.x >> 5)) * ROWS;
    if (row0 >= N) return;
    // rows past N repeat the last row (loads stay in bounds) and are not stored
    int64_t rows[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) rows[r] = row0 + r < N ? row0 + r : N - 1;
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;

    if (FAST) {
        const int64_t chunks = K >> 5;  // 16-byte chunks per row
        const uint4* __restrict__ Wv = reinterpret_cast<const uint4*>(W);
        auto scale_of = [&](int64_t b) -> float {
            if (!NESTED) return __ldg(sc.absmax + b);
            const float p = __fmul_rn(s_code[__ldg(sc.qabsmax + b)], __ldg(sc.nested_absmax + sc.nested_index(b)));
            return __fadd_rn(p, sc.offset);
        };
        int64_t c = lane;
        // two chunks per row in flight per iteration: all loads first, then the arithmetic
        for (; c + 32 < chunks; c += 64) {
            uint4 q[2][ROWS];
            float s[2][ROWS];
#pragma unroll
            for (int u = 0; u < 2; ++u)
#pragma unroll
                for (int r = 0; r < ROWS; ++r) q[u][r] = __ldcs(Wv + rows[r] * chunks + c + 32 * u);
            // the scales' loads go out with the weights' (L1/L2 hits mostly: 32 lanes share a few blocks)
#pragma unroll
            for (int u = 0; u < 2; ++u)
#pragma unroll
                for (int r = 0; r < ROWS; ++r) s[u][r] = scale_of((rows[r] * K + ((c + 32 * u) << 5)) >> sc.log2bs);
#pragma unroll
            for (int u = 0; u < 2; ++u) {
                float xv[32];
                XChunk<DT>::load(x, (c + 32 * u) << 5, xv);
#pragma unroll
                for (int r = 0; r < ROWS; ++r) acc[r] = __fmaf_rn(chunk_dot(q[u][r], xv, s_lut), s[u][r], acc[r]);
            }
        }
        if (c < chunks) {
            uint4 q[ROWS];
#pragma unroll
            for (int r = 0; r < ROWS; ++r) q[r] = __ldcs(Wv + rows[r] * chunks + c);
            float xv[32];
            XChunk<DT>::load(x, c << 5, xv);
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                const float s = scale_of((rows[r] * K + (c << 5)) >> sc.log2bs);
                acc[r] = __fmaf_rn(chunk_dot(q[r], xv, s_lut), s, acc[r]);
            }
        }
    } else {
        const typename Tr::T* xt = static_cast<const typename Tr::T*>(x);
        for (int64_t k = lane; k < K; k += 32) {
            const float xk = Tr::load(xt, k);
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                const int64_t e = rows[r] * K + k;
                const uint32_t byte = __ldg(W + (e >> 1));
                const uint32_t code = (e & 1) ? (byte & 15u) : (byte >> 4);
                const float w = __fmul_rn(s_lut[code], sc.block(e >> sc.log2bs, NESTED, s_code));
                acc[r] = __fmaf_rn(xk, w, acc[r]);
            }
        }
    }

    typename Tr::T* yt = static_cast<typename Tr::T*>(y);
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const float v = warp_sum(acc[r]);
        if (lane == 0 && row0 + r < N) Tr::store(yt, row0 + r, v);
    }
}

template <int DT, bool NESTED, int ROWS>
int launch_gemv4(bool fast, int quant_type, const void* x, const uint8_t* W, const Scale4& sc, void* y, int64_t N,
                 int64_t K, cudaStream_t stream) {
    const int64_t warps = (N + ROWS - 1) / ROWS;
    const int64_t grid = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    if (grid > 0x7FFFFFFF) return BNBD_ERR_INVALID_ARGUMENT;
    if (fast)
        gemv4_kernel<DT, NESTED, ROWS, true><<<unsigned(grid), GEMV_THREADS, 0, stream>>>(quant_type, x, W, sc, y, N, K);
    else
        gemv4_kernel<DT, NESTED, ROWS, false><<<unsigned(grid), GEMV_THREADS, 0, stream>>>(quant_type, x, W, sc, y, N, K);
    BNBD_CHECK_LAUNCH();
    return 0;
}

template <int DT, bool NESTED>
int launch_gemv4_rows(int rows, bool fast, int quant_type, const void* x, const uint8_t* W, const Scale4& sc, void* y,
                      int64_t N, int64_t K, cudaStream_t stream) {
    switch (rows) {
        case 1: return launch_gemv4<DT, NESTED, 1>(fast, quant_type, x, W, sc, y, N, K, stream);
        case 2: return launch_gemv4<DT, NESTED, 2>(fast, quant_type, x, W, sc, y, N, K, stream);
        default: return launch_gemv4<DT, NESTED, 4>(fast, quant_type, x, W, sc, y, N, K, stream);
    }
}

template <int DT>
int launch_gemv4_dt(bool nested, int rows, bool fast, int quant_type, const void* x, const uint8_t* W,
                    const Scale4& sc, void* y, int64_t N, int64_t K, cudaStream_t stream) {
    return nested ? launch_gemv4_rows<DT, true>(rows, fast, quant_type, x, W, sc, y, N, K, stream)
                  : launch_gemv4_rows<DT, false>(rows, fast, quant_type, x, W, sc, y, N, K, stream);
}

}  // namespace
}  // namespace bnbd

using namespace bnbd;

extern "C" BNBD_API int bnbd_gemv_4bit(int dtype, int quant_type, const void* x, const uint8_t* W, const float* absmax,
                                       const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                                       const float* offset, int nested_blocksize, void* y, int64_t n_rows,
                                       int64_t k, int blocksize, void* stream) {
    BNBD_REQUIRE(valid_dtype(dtype));
    BNBD_REQUIRE(quant_type == BNBD_FP4 || quant_type == BNBD_NF4);
    BNBD_REQUIRE(n_rows >= 0 && k >= 0);
    BNBD_REQUIRE(is_pow2(blocksize) && blocksize >= 32 && blocksize <= 4096);
    const bool nested = absmax == nullptr;
    if (nested) {
        BNBD_REQUIRE(qabsmax && nested_absmax && nested_code && offset && nested_blocksize > 0);
    } else {
        BNBD_REQUIRE(!qabsmax && !nested_absmax && !nested_code && !offset);
    }
    if (n_rows == 0) return 0;
    BNBD_REQUIRE(y);
    if (k == 0) {
        // an empty sum: zeros
        return int(cudaMemsetAsync(y, 0, size_t(n_rows) * (dtype == BNBD_F32 ? 4 : 2), static_cast<cudaStream_t>(stream)));
    }
    BNBD_REQUIRE(x && W);
    const cudaStream_t st = static_cast<cudaStream_t>(stream);
    const Scale4 sc = make_scale4(absmax, qabsmax, nested_absmax, nested_code, offset, nested_blocksize, blocksize);
    const bool fast = (k % 32) == 0 && aligned_to(x, 16) && aligned_to(W, 16);
    int rows = g_gemv_rows;
    if (rows != 1 && rows != 2 && rows != 4) {
        // as many rows per warp as still leave >= 12 warps per SM (x is loaded once for all rows of a warp; at 4 rows
        // and 2 chunks in flight per row a lane has 128 bytes of weights in flight, so 12 warps per SM keep ~48 KB
        // outstanding per SM, above what HBM3 needs), and few enough CTAs that they all fit in one wave for the
        // common sizes (no tail wave)
        int sms = 0;
        BNBD_RETURN_IF_ERROR(cudaError_t(sm_count(&sms)));
        const int64_t want_warps = int64_t(sms) * 12;
        rows = n_rows / 4 >= want_warps ? 4 : n_rows / 2 >= want_warps ? 2 : 1;
    }
    switch (dtype) {
        case BNBD_F32: return launch_gemv4_dt<BNBD_F32>(nested, rows, fast, quant_type, x, W, sc, y, n_rows, k, st);
        case BNBD_BF16: return launch_gemv4_dt<BNBD_BF16>(nested, rows, fast, quant_type, x, W, sc, y, n_rows, k, st);
        default: return launch_gemv4_dt<BNBD_F16>(nested, rows, fast, quant_type, x, W, sc, y, n_rows, k, st);
    }
}
