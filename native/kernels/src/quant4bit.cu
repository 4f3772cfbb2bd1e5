// 4-bit NF4/FP4 blockwise quantization (bnbd_quantize_4bit) and dequantization (bnbd_dequantize_4bit),
// the latter with a plain f32 absmax or the double-quant (nested) absmax.
#include "common.cuh"
#include "quant_tile.cuh"

namespace bnbd {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Dequantization. Work unit: EPC = 16 / sizeof(out) consecutive elements (4 f32 or 8 bf16/f16) = one 16-byte
// output vector from EPC/2 packed bytes (one 2- or 4-byte load); all in one quantization block (bs >= 32).
// A CTA step covers DQ4_UNITS * 256 consecutive units, unit k of thread t being k * 256 + t, so warp-wide
// loads and stores are contiguous and each thread has DQ4_UNITS loads in flight. The scale of each block the
// step touches is computed once into shared memory (nested: RN(RN(nested_code[q] * nested_absmax[b / nbs]) +
// offset)); the 16-entry table lives in shared memory (16 distinct words in 16 distinct banks: conflict-free).
// out = RN(table[code] * scale) -> dtype.
constexpr int DQ4_THREADS = 256;
#ifndef BNBD_DQ_UNITS
#define BNBD_DQ_UNITS 8
#endif
constexpr int DQ4_UNITS = BNBD_DQ_UNITS;
// scales per CTA step: DQ4_THREADS * DQ4_UNITS units of <= 8 elements over blocks of >= 32 elements, + 1
constexpr int DQ4_SCALES = DQ4_THREADS * DQ4_UNITS * 8 / 32 + 1;

struct Scale4 {
    const float* absmax;
    const uint8_t* qabsmax;
    const float* nested_absmax;
    const float* nested_code;
    const float* offset_ptr;  // device f32[1]
    float offset;             // *offset_ptr, read by each thread at kernel start
    int log2bs;
    int log2nbs;    // >= 0 when nested_blocksize is a power of two
    uint32_t nbs;   // nested blocksize
    // s_code: nested_code staged in shared memory (nested only)
    __device__ __forceinline__ float block(int64_t b, bool nested, const float* s_code) const {
        if (!nested) return __ldg(absmax + b);
        const int64_t nb = log2nbs >= 0 ? (b >> log2nbs) : int64_t(uint64_t(b) / nbs);
        const float p = __fmul_rn(s_code[__ldg(qabsmax + b)], __ldg(nested_absmax + nb));
        return __fadd_rn(p, offset);
    }
};

template <int EPC> struct PackedWord;
template <> struct PackedWord<4> {  // 4 elements = 2 bytes
    using T = uint16_t;
    __device__ __forceinline__ static int nib(T w, int j) {  // element j: byte j/2, high nibble first
        return int((uint32_t(w) >> (8 * (j >> 1) + ((j & 1) ? 0 : 4))) & 15u);
    }
};
template <> struct PackedWord<8> {  // 8 elements = 4 bytes
    using T = uint32_t;
    __device__ __forceinline__ static int nib(T w, int j) { return int((w >> (8 * (j >> 1) + ((j & 1) ? 0 : 4))) & 15u); }
};

template <int DT, bool ALIGNED, bool NESTED>
__global__ void __launch_bounds__(DQ4_THREADS)
    dequant4_kernel(int quant_type, const uint8_t* __restrict__ A, Scale4 sc, void* __restrict__ outv, int64_t n) {
    using Tr = DType<DT>;
    using T = typename Tr::T;
    constexpr int EPC = Tr::VEC;
    using W = PackedWord<EPC>;
    if (NESTED) sc.offset = __ldg(sc.offset_ptr);
    __shared__ float s_lut[16];
    __shared__ float s_code[NESTED ? 256 : 1];
    if (threadIdx.x < 16)
        s_lut[threadIdx.x] = quant_type == BNBD_NF4 ? bnbd_nf4_table[threadIdx.x] : bnbd_fp4_table[threadIdx.x];
    if (NESTED)
        for (int j = threadIdx.x; j < 256; j += blockDim.x) s_code[j] = __ldg(sc.nested_code + j);
    __syncthreads();
    T* __restrict__ out = static_cast<T*>(outv);

    int64_t scalar_from = 0;
    if (ALIGNED) {
        // The scales of the blocks one CTA step touches are computed once (one block per thread) into shared
        // memory, double-buffered by step parity (one barrier per step).
        __shared__ float s_scale[2][DQ4_SCALES];
        const int64_t nunits = n / EPC;
        const typename W::T* __restrict__ Aw = reinterpret_cast<const typename W::T*>(A);
        int par = 0;
        for (int64_t base = int64_t(blockIdx.x) * (DQ4_THREADS * DQ4_UNITS); base < nunits;
             base += int64_t(gridDim.x) * (DQ4_THREADS * DQ4_UNITS), par ^= 1) {
            const int64_t uend = base + DQ4_THREADS * DQ4_UNITS < nunits ? base + DQ4_THREADS * DQ4_UNITS : nunits;
            const int64_t b0 = (base * EPC) >> sc.log2bs;
            const int nblk = int(((uend * EPC - 1) >> sc.log2bs) - b0 + 1);
            for (int j = threadIdx.x; j < nblk; j += DQ4_THREADS) s_scale[par][j] = sc.block(b0 + j, NESTED, s_code);
            typename W::T q[DQ4_UNITS];
#pragma unroll
            for (int k = 0; k < DQ4_UNITS; ++k) {
                const int64_t u = base + k * DQ4_THREADS + threadIdx.x;
                if (u < nunits) q[k] = __ldg(Aw + u);
            }
            __syncthreads();
#pragma unroll
            for (int k = 0; k < DQ4_UNITS; ++k) {
                const int64_t u = base + k * DQ4_THREADS + threadIdx.x;
                if (u < nunits) {
                    const float sk = s_scale[par][int(((u * EPC) >> sc.log2bs) - b0)];
                    float v[EPC];
#pragma unroll
                    for (int j = 0; j < EPC; ++j) v[j] = __fmul_rn(s_lut[W::nib(q[k], j)], sk);
                    __stcs(reinterpret_cast<uint4*>(out + u * EPC), Tr::pack(v));  // streaming store
                }
            }
        }
        scalar_from = nunits * EPC;
    }
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t e = scalar_from + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
        const uint32_t byte = A[e >> 1];
        const uint32_t c = (e & 1) ? (byte & 15u) : (byte >> 4);
        const float v = __fmul_rn(s_lut[c], sc.block(e >> sc.log2bs, NESTED, s_code));
        Tr::store(out, e, v);
    }
}

template <int DT, bool ALIGNED>
int launch_dq4(bool nested, int quant_type, const uint8_t* A, const Scale4& sc, void* out, int64_t n, int64_t grid,
               cudaStream_t stream) {
    if (nested)
        dequant4_kernel<DT, ALIGNED, true><<<(unsigned)grid, DQ4_THREADS, 0, stream>>>(quant_type, A, sc, out, n);
    else
        dequant4_kernel<DT, ALIGNED, false><<<(unsigned)grid, DQ4_THREADS, 0, stream>>>(quant_type, A, sc, out, n);
    BNBD_CHECK_LAUNCH();
    return 0;
}

}  // namespace
}  // namespace bnbd

using namespace bnbd;

extern "C" BNBD_API int bnbd_quantize_4bit(int dtype, int quant_type, const void* A, float* absmax, uint8_t* out,
                                           int64_t n, int blocksize, void* stream) {
    BNBD_REQUIRE(valid_dtype(dtype));
    BNBD_REQUIRE(quant_type == BNBD_FP4 || quant_type == BNBD_NF4);
    BNBD_REQUIRE(n >= 0);
    BNBD_REQUIRE(is_pow2(blocksize) && blocksize >= 32 && blocksize <= 4096);
    if (n == 0) return 0;
    BNBD_REQUIRE(A && absmax && out);
    const cudaStream_t st = static_cast<cudaStream_t>(stream);
    const int log2bs = ilog2(blocksize);
    const int vec = dtype == BNBD_F32 ? 4 : 8;
    const bool aligned = aligned_to(A, 16) && aligned_to(out, uintptr_t(vec / 2));
    int sms = 0;
    BNBD_RETURN_IF_ERROR(cudaError_t(sm_count(&sms)));
    const int64_t ntiles = (n + QT_TILE - 1) / QT_TILE;
    // persistent grid: the per-CTA code table is built once per CTA
    if (quant_type == BNBD_NF4) {
        const int64_t cap = int64_t(sms) * quant_tile_blocks_per_sm<NF4Coder>(dtype);
        const int64_t grid = balanced_grid(ntiles, cap);
        return launch_quant_tile<NF4Coder>(dtype, aligned, A, nullptr, nullptr, absmax, out, n, log2bs, grid, st);
    }
    const int64_t cap = int64_t(sms) * quant_tile_blocks_per_sm<FP4Coder>(dtype);
    const int64_t grid = balanced_grid(ntiles, cap);
    return launch_quant_tile<FP4Coder>(dtype, aligned, A, nullptr, nullptr, absmax, out, n, log2bs, grid, st);
}

extern "C" BNBD_API int bnbd_dequantize_4bit(int dtype, int quant_type, const uint8_t* A, const float* absmax,
                                             const uint8_t* qabsmax, const float* nested_absmax,
                                             const float* nested_code, const float* offset, int nested_blocksize,
                                             void* out, int64_t n, int blocksize, void* stream) {
    BNBD_REQUIRE(valid_dtype(dtype));
    BNBD_REQUIRE(quant_type == BNBD_FP4 || quant_type == BNBD_NF4);
    BNBD_REQUIRE(n >= 0);
    BNBD_REQUIRE(is_pow2(blocksize) && blocksize >= 32 && blocksize <= (1 << 30));
    const bool nested = absmax == nullptr;
    if (nested) {
        BNBD_REQUIRE(qabsmax && nested_absmax && nested_code && offset && nested_blocksize > 0);
    } else {
        BNBD_REQUIRE(!qabsmax && !nested_absmax && !nested_code && !offset);
    }
    if (n == 0) return 0;
    BNBD_REQUIRE(A && out);
    const cudaStream_t st = static_cast<cudaStream_t>(stream);

    Scale4 sc;
    sc.absmax = absmax;
    sc.qabsmax = qabsmax;
    sc.nested_absmax = nested_absmax;
    sc.nested_code = nested_code;
    sc.offset_ptr = offset;
    sc.offset = 0.0f;
    sc.log2bs = ilog2(blocksize);
    sc.log2nbs = nested && is_pow2(nested_blocksize) ? ilog2(nested_blocksize) : -1;
    sc.nbs = nested ? uint32_t(nested_blocksize) : 1u;
    int sms = 0;
    BNBD_RETURN_IF_ERROR(cudaError_t(sm_count(&sms)));
    const int epc = dtype == BNBD_F32 ? 4 : 8;  // elements per 16-byte output vector (epc / 2 packed bytes)
    const bool aligned = aligned_to(A, uintptr_t(epc / 2)) && aligned_to(out, 16);
    const int64_t per_cta = aligned ? int64_t(DQ4_THREADS) * DQ4_UNITS * epc : DQ4_THREADS;
    int64_t grid = (n + per_cta - 1) / per_cta;
    grid = grid < 1 ? 1 : grid;
    const int64_t cap = int64_t(sms) * 8;
    if (grid > cap) grid = cap;
    switch (dtype) {
        case BNBD_F32:
            return aligned ? launch_dq4<BNBD_F32, true>(nested, quant_type, A, sc, out, n, grid, st)
                           : launch_dq4<BNBD_F32, false>(nested, quant_type, A, sc, out, n, grid, st);
        case BNBD_BF16:
            return aligned ? launch_dq4<BNBD_BF16, true>(nested, quant_type, A, sc, out, n, grid, st)
                           : launch_dq4<BNBD_BF16, false>(nested, quant_type, A, sc, out, n, grid, st);
        default:
            return aligned ? launch_dq4<BNBD_F16, true>(nested, quant_type, A, sc, out, n, grid, st)
                           : launch_dq4<BNBD_F16, false>(nested, quant_type, A, sc, out, n, grid, st);
    }
}
