// Shared helpers for the BnbDist CUDA kernels: error checking, launch sizing, dtype loads/stores.
//
// Arithmetic policy (see the numerical contract in include/bnbdist_kernels.h):
// every operation that the contract pins down is written with an explicit IEEE round-to-nearest intrinsic
// (__fmul_rn, __fadd_rn, __fsub_rn, __frcp_rn, __fdiv_rn, __dadd_rn, __ddiv_rn). Those intrinsics are never
// contracted into FMAs and never replaced by approximations, whatever the compiler flags, so the results do
// not depend on -fmad. CMakeLists.txt additionally compiles with -fmad=false (belt and braces: a plain
// expression added later cannot silently turn into an FMA) and never with --use_fast_math, so -ftz=false,
// -prec-div=true and -prec-sqrt=true stay in force: denormals are kept and compared exactly.
// Upcasts from bf16/f16 are exact; downcasts use __float2bfloat16_rn / __float2half_rn (round to nearest even).
#ifndef BNBDIST_SRC_COMMON_CUH
#define BNBDIST_SRC_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "bnbdist_kernels.h"

#define BNBD_RETURN_IF_ERROR(expr)                       \
    do {                                                 \
        cudaError_t bnbd_e_ = (expr);                    \
        if (bnbd_e_ != cudaSuccess) return (int)bnbd_e_; \
    } while (0)

// Checked after every launch.
#define BNBD_CHECK_LAUNCH() BNBD_RETURN_IF_ERROR(cudaGetLastError())

#define BNBD_REQUIRE(cond)                                   \
    do {                                                     \
        if (!(cond)) return BNBD_ERR_INVALID_ARGUMENT;       \
    } while (0)

namespace bnbd {

// ---------------------------------------------------------------------------------------------------------
// Host helpers (device_info.cu).

// Number of SMs / compute capability major of the current device (cached per device). Return a cudaError_t.
int sm_count(int* out);
int cc_major(int* out);

// Launch with Programmatic Dependent Launch allowed (sm_90+; a plain launch elsewhere). A kernel launched so
// may start before the previous kernel of the stream has finished, once that one has triggered
// (griddepcontrol.launch_dependents: the quantization tile kernels and the mean kernel trigger at their start;
// any other kernel triggers implicitly when it exits). It must call pdl_wait() before touching memory the
// previous kernel may write (quant_tile_kernel reads only the constant `code` before it).
template <typename... KArgs, typename... Args>
cudaError_t launch_pdl_smem(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                            Args... args) {
    int major = 0;
    const int e = cc_major(&major);
    if (e != 0) return cudaError_t(e);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = major >= 9 ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}
template <typename... KArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args... args) {
    return launch_pdl_smem(kernel, grid, block, 0, stream, args...);
}

inline bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }
inline int ilog2(int64_t v) {
    int r = 0;
    while ((int64_t(1) << (r + 1)) <= v) ++r;
    return r;
}
inline bool aligned_to(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }
inline bool valid_dtype(int dtype) { return dtype == BNBD_F32 || dtype == BNBD_BF16 || dtype == BNBD_F16; }

// Test hook (tests/selftest.cu links the objects directly): 0 = automatic choice of the 8-bit code search,
// 1 = always the shared-memory bucket table, 2 = always the plain midpoint search. Not exported.
extern int g_q8_search_mode;
// Test hook: rows per warp of bnbd_gemv_4bit (1, 2 or 4; anything else = automatic choice). Not exported.
extern int g_gemv_rows;

// ---------------------------------------------------------------------------------------------------------
// dtype traits. VEC = elements in one 16-byte vector.

template <int DT> struct DType;

template <> struct DType<BNBD_F32> {
    using T = float;
    static constexpr int VEC = 4;
    __device__ __forceinline__ static float load(const T* p, int64_t i) { return p[i]; }
    __device__ __forceinline__ static void store(T* p, int64_t i, float v) { p[i] = v; }
    // 16 bytes -> 4 floats
    __device__ __forceinline__ static void unpack(const uint4& u, float* v) {
        v[0] = __uint_as_float(u.x);
        v[1] = __uint_as_float(u.y);
        v[2] = __uint_as_float(u.z);
        v[3] = __uint_as_float(u.w);
    }
    // 2 floats -> one 32-bit word is not used for f32; pack 4 floats into 16 bytes
    __device__ __forceinline__ static uint4 pack(const float* v) {
        return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
    }
};

template <> struct DType<BNBD_BF16> {
    using T = __nv_bfloat16;
    static constexpr int VEC = 8;
    __device__ __forceinline__ static float load(const T* p, int64_t i) {
        return __uint_as_float(uint32_t(reinterpret_cast<const uint16_t*>(p)[i]) << 16);  // exact
    }
    __device__ __forceinline__ static void store(T* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
    __device__ __forceinline__ static void unpack_word(uint32_t w, float& lo, float& hi) {
        lo = __uint_as_float(w << 16);
        hi = __uint_as_float(w & 0xFFFF0000u);
    }
    __device__ __forceinline__ static uint32_t pack_word(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x = lo (low half), both RN
        return *reinterpret_cast<uint32_t*>(&h);
    }
    __device__ __forceinline__ static void unpack(const uint4& u, float* v) {
        unpack_word(u.x, v[0], v[1]);
        unpack_word(u.y, v[2], v[3]);
        unpack_word(u.z, v[4], v[5]);
        unpack_word(u.w, v[6], v[7]);
    }
    __device__ __forceinline__ static uint4 pack(const float* v) {
        return make_uint4(pack_word(v[0], v[1]), pack_word(v[2], v[3]), pack_word(v[4], v[5]), pack_word(v[6], v[7]));
    }
};

template <> struct DType<BNBD_F16> {
    using T = __half;
    static constexpr int VEC = 8;
    __device__ __forceinline__ static float load(const T* p, int64_t i) { return __half2float(p[i]); }  // exact
    __device__ __forceinline__ static void store(T* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
    __device__ __forceinline__ static void unpack_word(uint32_t w, float& lo, float& hi) {
        lo = __half2float(__ushort_as_half((unsigned short)(w & 0xFFFFu)));
        hi = __half2float(__ushort_as_half((unsigned short)(w >> 16)));
    }
    __device__ __forceinline__ static uint32_t pack_word(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);  // .x = lo (low half), both RN
        return *reinterpret_cast<uint32_t*>(&h);
    }
    __device__ __forceinline__ static void unpack(const uint4& u, float* v) {
        unpack_word(u.x, v[0], v[1]);
        unpack_word(u.y, v[2], v[3]);
        unpack_word(u.z, v[4], v[5]);
        unpack_word(u.w, v[6], v[7]);
    }
    __device__ __forceinline__ static uint4 pack(const float* v) {
        return make_uint4(pack_word(v[0], v[1]), pack_word(v[2], v[3]), pack_word(v[4], v[5]), pack_word(v[6], v[7]));
    }
};

// ---------------------------------------------------------------------------------------------------------
// Device helpers.

// Programmatic dependent launch (no-ops before sm_90 and for kernels launched without the attribute).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Shared-memory address of a generic pointer into shared memory (for PTX operands).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// max |x| with fmaxf semantics (NaN ignored). Order-independent for the values that occur (all >= +0).
__device__ __forceinline__ float absmax_step(float m, float x) { return fmaxf(m, fabsf(x)); }

__device__ __forceinline__ float warp_max_xor(float v, int width) {
    // reduce within aligned groups of `width` lanes (power of two <= 32, uniform); every lane gets the group max
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        if (o < width) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}

__device__ __forceinline__ float warp_max_all(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}

}  // namespace bnbd

#endif
