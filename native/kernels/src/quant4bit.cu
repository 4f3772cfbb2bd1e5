// 4-bit NF4/FP4 blockwise quantization (bnbd_quantize_4bit) and dequantization (bnbd_dequantize_4bit),
// the latter with a plain f32 absmax or the double-quant (nested) absmax.
#include "common.cuh"
#include "quant_tile.cuh"
#include "scale4.cuh"

namespace bnbd {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Dequantization. Work unit: EPC = 16 / sizeof(out) consecutive elements (4 f32 or 8 bf16/f16) = one 16-byte
// output vector from EPC/2 packed bytes (one 2- or 4-byte load); all in one quantization block (bs >= 32).
// A CTA step covers DQ4_UNITS * 256 consecutive units, unit k of thread t being k * 256 + t, so warp-wide
// loads and stores are contiguous. Each unit's scale is computed where it is used (no barrier, no staging): a
// step first issues all its loads (the packed codes and, per unit, absmax[b] or qabsmax[b] and
// nested_absmax[b / nbs]; a warp's 32 consecutive units lie in one or a few blocks, so these are one or two
// sectors per warp), then scale = absmax[b], or RN(RN(nested_code[qabsmax[b]] * nested_absmax[b / nbs]) +
// offset), and out = RN(table[code] * scale) -> dtype. The 16-entry table and the nested code live in shared
// memory (the table: 16 distinct words in 16 distinct banks, conflict-free); the first step's loads are issued
// before they are staged. Grid: one CTA per step (the block scheduler balances the SMs; on an H100 this beat a
// persistent grid with static, equal shares by 5 %, 8192^2 bf16).
constexpr int DQ4_THREADS = 256;
#ifndef BNBD_DQ4_UNITS
#define BNBD_DQ4_UNITS 4
#endif
constexpr int DQ4_UNITS = BNBD_DQ4_UNITS;


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
    constexpr int STEP = DQ4_THREADS * DQ4_UNITS;  // units per CTA step
    using W = PackedWord<EPC>;
    __shared__ float s_lut[16];
    __shared__ float s_code[NESTED ? 256 : 1];
    T* __restrict__ out = static_cast<T*>(outv);

    // the loads of one step: packed codes, and absmax[b] or qabsmax[b] + nested_absmax[b / nbs] per unit
    struct Step {
        typename W::T q[DQ4_UNITS];
        float s[DQ4_UNITS];      // absmax[b], or nested_absmax[b / nbs] (nested)
        uint32_t qa[DQ4_UNITS];  // qabsmax[b] (nested)
    };
    const int64_t nunits = ALIGNED ? n / EPC : 0;
    const int ush = sc.log2bs - (EPC == 8 ? 3 : 2);  // units per quantization block = 2^ush
    const typename W::T* __restrict__ Aw = reinterpret_cast<const typename W::T*>(A);
    auto issue = [&](Step& st, int64_t base) {
#pragma unroll
        for (int k = 0; k < DQ4_UNITS; ++k) {
            const int64_t u = base + k * DQ4_THREADS + threadIdx.x;
            if (u < nunits) {
                st.q[k] = __ldg(Aw + u);
                const int64_t b = u >> ush;
                if (NESTED) {
                    st.qa[k] = __ldg(sc.qabsmax + b);
                    st.s[k] = __ldg(sc.nested_absmax + sc.nested_index(b));
                } else {
                    st.s[k] = __ldg(sc.absmax + b);
                }
            }
        }
    };
    auto finish = [&](const Step& st, int64_t base) {
#pragma unroll
        for (int k = 0; k < DQ4_UNITS; ++k) {
            const int64_t u = base + k * DQ4_THREADS + threadIdx.x;
            if (u < nunits) {
                const float sk = NESTED ? __fadd_rn(__fmul_rn(s_code[st.qa[k]], st.s[k]), sc.offset) : st.s[k];
                float v[EPC];
#pragma unroll
                for (int j = 0; j < EPC; ++j) v[j] = __fmul_rn(s_lut[W::nib(st.q[k], j)], sk);
                __stcs(reinterpret_cast<uint4*>(out + u * EPC), Tr::pack(v));  // streaming store
            }
        }
    };

    // the first step's loads go out before the tables are staged
    const int64_t stride = int64_t(gridDim.x) * STEP;
    int64_t base = int64_t(blockIdx.x) * STEP;
    Step st;
    if (ALIGNED && base < nunits) issue(st, base);
    if (NESTED) sc.offset = __ldg(sc.offset_ptr);
    if (threadIdx.x < 16)
        s_lut[threadIdx.x] = quant_type == BNBD_NF4 ? bnbd_nf4_table[threadIdx.x] : bnbd_fp4_table[threadIdx.x];
    if (NESTED)
        for (int j = threadIdx.x; j < 256; j += blockDim.x) s_code[j] = __ldg(sc.nested_code + j);
    __syncthreads();

    if (ALIGNED) {
        // one step per CTA, unless the grid was capped
        while (base < nunits) {
            finish(st, base);
            base += stride;
            if (base < nunits) issue(st, base);
        }
    }
    const int64_t scalar_from = nunits * EPC;
    const int64_t estride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t e = scalar_from + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += estride) {
        const uint32_t byte = A[e >> 1];
        const uint32_t c = (e & 1) ? (byte & 15u) : (byte >> 4);
        const float v = __fmul_rn(s_lut[c], sc.block(e >> sc.log2bs, NESTED, s_code));
        Tr::store(out, e, v);
    }
}

template <int DT, bool ALIGNED, bool NESTED>
int launch_dq4_nested(int quant_type, const uint8_t* A, const Scale4& sc, void* out, int64_t n, int sms,
                      cudaStream_t stream) {
    // aligned: one CTA per step of DQ4_THREADS * DQ4_UNITS 16-byte vectors; otherwise the element loop (one
    // element per thread and step) on at most 8 CTAs per SM
    const int64_t per_cta = ALIGNED ? int64_t(DQ4_THREADS) * DQ4_UNITS * DType<DT>::VEC : DQ4_THREADS;
    int64_t grid = (n + per_cta - 1) / per_cta;
    const int64_t cap = ALIGNED ? (int64_t(1) << 30) : int64_t(sms) * 8;
    if (grid > cap) grid = cap;
    dequant4_kernel<DT, ALIGNED, NESTED><<<(unsigned)grid, DQ4_THREADS, 0, stream>>>(quant_type, A, sc, out, n);
    BNBD_CHECK_LAUNCH();
    return 0;
}

template <int DT, bool ALIGNED>
int launch_dq4(bool nested, int quant_type, const uint8_t* A, const Scale4& sc, void* out, int64_t n, int sms,
               cudaStream_t stream) {
    return nested ? launch_dq4_nested<DT, ALIGNED, true>(quant_type, A, sc, out, n, sms, stream)
                  : launch_dq4_nested<DT, ALIGNED, false>(quant_type, A, sc, out, n, sms, stream);
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
        const int64_t cap = int64_t(sms) * quant_tile_blocks_per_sm<NF4Coder>(dtype, aligned, log2bs);
        const int64_t grid = balanced_grid(ntiles, cap);
        return launch_quant_tile<NF4Coder>(dtype, aligned, A, nullptr, nullptr, absmax, out, n, log2bs, grid, st);
    }
    const int64_t cap = int64_t(sms) * quant_tile_blocks_per_sm<FP4Coder>(dtype, aligned, log2bs);
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

    const Scale4 sc = make_scale4(absmax, qabsmax, nested_absmax, nested_code, offset, nested_blocksize, blocksize);
    int sms = 0;
    BNBD_RETURN_IF_ERROR(cudaError_t(sm_count(&sms)));
    const int epc = dtype == BNBD_F32 ? 4 : 8;  // elements per 16-byte output vector (epc / 2 packed bytes)
    const bool aligned = aligned_to(A, uintptr_t(epc / 2)) && aligned_to(out, 16);
    switch (dtype) {
        case BNBD_F32:
            return aligned ? launch_dq4<BNBD_F32, true>(nested, quant_type, A, sc, out, n, sms, st)
                           : launch_dq4<BNBD_F32, false>(nested, quant_type, A, sc, out, n, sms, st);
        case BNBD_BF16:
            return aligned ? launch_dq4<BNBD_BF16, true>(nested, quant_type, A, sc, out, n, sms, st)
                           : launch_dq4<BNBD_BF16, false>(nested, quant_type, A, sc, out, n, sms, st);
        default:
            return aligned ? launch_dq4<BNBD_F16, true>(nested, quant_type, A, sc, out, n, sms, st)
                           : launch_dq4<BNBD_F16, false>(nested, quant_type, A, sc, out, n, sms, st);
    }
}
