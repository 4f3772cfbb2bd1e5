// Per-block scales of 4-bit data as the dequantization and GEMV kernels read them: a plain f32 absmax, or the
// double-quantized (nested) absmax RN(RN(nested_code[qabsmax[b]] * nested_absmax[b / nbs]) + offset).
#ifndef BNBDIST_SRC_SCALE4_CUH
#define BNBDIST_SRC_SCALE4_CUH

#include "common.cuh"

namespace bnbd {

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
    // index of the nested block of block b
    __device__ __forceinline__ int64_t nested_index(int64_t b) const {
        if (log2nbs >= 0) return b >> log2nbs;
        return b < (int64_t(1) << 32) ? int64_t(uint32_t(b) / nbs) : int64_t(uint64_t(b) / nbs);
    }
    // s_code: nested_code staged in shared memory (nested only)
    __device__ __forceinline__ float block(int64_t b, bool nested, const float* s_code) const {
        if (!nested) return __ldg(absmax + b);
        const int64_t nb = nested_index(b);
        const float p = __fmul_rn(s_code[__ldg(qabsmax + b)], __ldg(nested_absmax + nb));
        return __fadd_rn(p, offset);
    }
};

// Fills a Scale4 from the ABI arguments (nested when absmax is NULL).
inline Scale4 make_scale4(const float* absmax, const uint8_t* qabsmax, const float* nested_absmax,
                          const float* nested_code, const float* offset, int nested_blocksize, int blocksize) {
    const bool nested = absmax == nullptr;
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
    return sc;
}

}  // namespace bnbd

#endif
