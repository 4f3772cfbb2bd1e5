// Fused multi-tensor optimizer updates: bitsandbytes' 8-bit blockwise Adam/AdamW, SGD-momentum, Lion and RMSprop,
// and the same rules with 32-bit states (bnbd_optimizer_8bit_blockwise, bnbd_optimizer_32bit). Arithmetic: the
// contract in include/bnbdist_kernels.h, i.e. the C# CPU kernels of src/Optim8bit/Kernels operation for operation
// (explicit __fmaf_rn where they use FusedMultiplyAdd, _rn intrinsics everywhere else).
//
// Work split: one warp per 256-element state block, 8 elements per lane in two runs of 4 (vector loads that are
// contiguous across the warp), so the block's absmax is a warp reduction and needs no shared memory or barrier. A persistent grid strides over all blocks of all tensors of the launch; a warp's blocks increase, so it
// finds each block's tensor by scanning the descriptor array forward. Partial blocks (a tensor's last) and
// misaligned tensors take a guarded scalar path with the same arithmetic. Requantization looks codes up in a
// shared-memory bucket table (src/codesearch.cuh, ties-up rule), built once per CTA.
#include <algorithm>
#include <cstddef>
#include <cstdlib>

#include "common.cuh"
#include "codesearch.cuh"

namespace bnbd {

// Test hook: 0 = bucket table, L2 prefetch as g_optim_prefetch says (default); 1 = bucket table without prefetch;
// 2 = plain 8-step midpoint search; 3 = bucket table with prefetch. Not exported.
int g_optim_search_mode = 0;

#ifndef BNBD_OPTIM_PREFETCH
// Default of the 8-bit kernels' L2 prefetch of each warp's next block (see prefetch_block): off, because on an H100 it
// made the step slower (AdamW8bit 1.97 vs 1.92 ms, Lion8bit 1.58 vs 1.36 ms, 4x64M f32, self-test); the environment variable
// BNBDIST_OPTIM_PREFETCH=0|1 overrides it at run time, so that one build can be timed both ways.
#define BNBD_OPTIM_PREFETCH 0
#endif
static int optim_prefetch_default() {
    static const int v = [] {
        const char* e = std::getenv("BNBDIST_OPTIM_PREFETCH");
        return e != nullptr && (e[0] == '0' || e[0] == '1') ? e[0] - '0' : BNBD_OPTIM_PREFETCH;
    }();
    return v;
}

namespace {

constexpr int kBlock = 256;        // elements per state block
constexpr int kPerLane = 8;        // elements per lane
constexpr int kThreads = 256;      // threads per CTA (8 warps)
#ifndef BNBD_OPTIM_MIN_CTAS
// __launch_bounds__ minimum CTAs per SM, i.e. a register cap (85 at 3). Measured on an H100, AdamW8bit f32 4x64M:
// 1 (122 registers) 2.30 ms, 2 2.31 ms, 3 1.92 ms, 4 (64 registers) 2.00 ms; the 1-state rules use <= 64 either way.
#define BNBD_OPTIM_MIN_CTAS 3
#endif

// StateQuantizer.MaxAbs is fmaxf: a NaN state is left out of the block maximum.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}

__device__ __forceinline__ bool signbit_f(float x) { return (__float_as_uint(x) >> 31) != 0; }

// Lane layout: lane L holds the block's elements (j >> 2) * 128 + 4L + (j & 3), j = 0..7, i.e. two runs of 4, so that
// every warp-wide load and store covers one contiguous span (512 bytes of f32, 256 of bf16/f16, 128 of codes).
__device__ __forceinline__ int elem_off(int lane, int j) { return (j >> 2) * 128 + lane * 4 + (j & 3); }

// Four consecutive elements of DT as one vector word (16 bytes of f32, 8 of bf16/f16).
template <int DT> struct Quad {
    using W = uint2;
    __device__ __forceinline__ static void unpack(const W& w, float* v) {
        DType<DT>::unpack_word(w.x, v[0], v[1]);
        DType<DT>::unpack_word(w.y, v[2], v[3]);
    }
    __device__ __forceinline__ static W pack(const float* v) {
        return make_uint2(DType<DT>::pack_word(v[0], v[1]), DType<DT>::pack_word(v[2], v[3]));
    }
};
template <> struct Quad<BNBD_F32> {
    using W = uint4;
    __device__ __forceinline__ static void unpack(const W& w, float* v) { DType<BNBD_F32>::unpack(w, v); }
    __device__ __forceinline__ static W pack(const float* v) { return DType<BNBD_F32>::pack(v); }
};

// A lane's 8 elements of the block starting at element blk (len valid elements; VEC: a full, aligned block).
template <int DT, bool VEC>
__device__ __forceinline__ void load8(const void* base, int64_t blk, int lane, int len, float* v) {
    using Tr = DType<DT>;
    const typename Tr::T* p = static_cast<const typename Tr::T*>(base) + blk;
    if (VEC) {
#pragma unroll
        for (int k = 0; k < 2; ++k)
            Quad<DT>::unpack(*reinterpret_cast<const typename Quad<DT>::W*>(p + k * 128 + lane * 4), v + 4 * k);
    } else {
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) v[j] = elem_off(lane, j) < len ? Tr::load(p, elem_off(lane, j)) : 0.0f;
    }
}

template <int DT, bool VEC>
__device__ __forceinline__ void store8(void* base, int64_t blk, int lane, int len, const float* v) {
    using Tr = DType<DT>;
    typename Tr::T* p = static_cast<typename Tr::T*>(base) + blk;
    if (VEC) {
#pragma unroll
        for (int k = 0; k < 2; ++k)
            *reinterpret_cast<typename Quad<DT>::W*>(p + k * 128 + lane * 4) = Quad<DT>::pack(v + 4 * k);
    } else {
#pragma unroll
        for (int j = 0; j < kPerLane; ++j)
            if (elem_off(lane, j) < len) Tr::store(p, elem_off(lane, j), v[j]);
    }
}

// Codes are kept packed, 4 per word (w[k] byte q = element 4k + q), to spare registers.
template <bool VEC>
__device__ __forceinline__ void load_codes(const uint8_t* base, int64_t blk, int lane, int len, uint32_t* w) {
    const uint8_t* p = base + blk;
    if (VEC) {
#pragma unroll
        for (int k = 0; k < 2; ++k) w[k] = *reinterpret_cast<const uint32_t*>(p + k * 128 + lane * 4);
    } else {
        w[0] = w[1] = 0u;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j)
            if (elem_off(lane, j) < len) w[j >> 2] |= uint32_t(p[elem_off(lane, j)]) << (8 * (j & 3));
    }
}

__device__ __forceinline__ int code_of(const uint32_t* w, int j) { return int((w[j >> 2] >> (8 * (j & 3))) & 0xFFu); }

template <bool VEC>
__device__ __forceinline__ void store_codes(uint8_t* base, int64_t blk, int lane, int len, const uint32_t* w) {
    uint8_t* p = base + blk;
    if (VEC) {
#pragma unroll
        for (int k = 0; k < 2; ++k) *reinterpret_cast<uint32_t*>(p + k * 128 + lane * 4) = w[k];
    } else {
#pragma unroll
        for (int j = 0; j < kPerLane; ++j)
            if (elem_off(lane, j) < len) p[elem_off(lane, j)] = uint8_t(code_of(w, j));
    }
}

// Shared memory of the 8-bit kernel: code values (dequantization), midpoints and bucket tables (requantization).
struct OptimSmem {
    float q1[256];
    float q2[256];
    float mid1[256];
    float mid2[256];
    float2 tab[1];  // TABLE: Q8_TABLE entries for state 1, then (Adam) Q8_TABLE for state 2
};

template <bool TABLE>
__device__ __forceinline__ int requant_code(const float2* tab, const float* mid, float xn) {
    return TABLE ? q8_search_table<true>(tab, mid, xn) : q8_search_plain_up(mid, xn);
}

// StateQuantizer.Signed: nearest code by midpoints (ties up), then bitsandbytes' sign fix, stepping by
// (x > 0 ? +1 : -1) on an unsigned char (so it wraps as in bitsandbytes).
template <bool TABLE>
__device__ __forceinline__ int signed_code(const float2* tab, const float* mid, const float* q, float x, float absmax) {
    int c = requant_code<TABLE>(tab, mid, __fdiv_rn(x, absmax));
    if (signbit_f(q[c]) != signbit_f(x)) c += x > 0.0f ? 1 : -1;
    return c & 0xFF;
}

// ParamRounding: where bitsandbytes stores an intermediate in the parameter dtype, round to it (RN) and widen back.
template <int DT>
__device__ __forceinline__ float rnd(float x) {
    if (DT == BNBD_BF16) return __bfloat162float(__float2bfloat16_rn(x));
    if (DT == BNBD_F16) return __half2float(__float2half_rn(x));
    return x;
}

// OneState8bitBlockwise.Sgn: NaN -> 0.
__device__ __forceinline__ float sgn(float x) { return (0.0f < x ? 1.0f : 0.0f) - (x < 0.0f ? 1.0f : 0.0f); }

// StateQuantizer.StoredAbsmax: an overflowed block maximum is stored as FLT_MAX.
__device__ __forceinline__ float stored_absmax(float m) {
    return m == __int_as_float(0x7F800000) ? __int_as_float(0x7F7FFFFF) : m;
}

// The 8-bit rules' per-element update (Adam8bitBlockwise / OneState8bitBlockwise): p and g in, new p and state(s)
// out; `counted` becomes false for Adam's non-finite gradients (the element stays out of the block maxima).
template <int RULE, int DT>
__device__ __forceinline__ void update(float& p, float g, float m0, float v0, float& s1, float& s2, bool& counted,
                                       const bnbd_optim_hparams& hp) {
    if (RULE == BNBD_OPTIM_ADAM) {
        if (!isfinite(g)) {
            s1 = 0.0f;
            s2 = 0.0f;
            counted = false;
            return;
        }
        const float m = __fmaf_rn(m0, hp.beta1, __fmul_rn(__fsub_rn(1.0f, hp.beta1), g));
        const float v = __fmaf_rn(v0, hp.beta2, __fmul_rn(__fmul_rn(__fsub_rn(1.0f, hp.beta2), g), g));
        s1 = m;
        s2 = v;
        const float denom = __fmaf_rn(hp.correction2, hp.eps, __fsqrt_rn(v));
        const float q = rnd<DT>(__fmaf_rn(hp.step_size, __fdiv_rn(m, denom), p));
        p = hp.weight_decay > 0.0f ? rnd<DT>(__fmul_rn(q, hp.decay)) : q;
    } else if (RULE == BNBD_OPTIM_MOMENTUM) {
        if (hp.weight_decay > 0.0f) g = __fmaf_rn(hp.weight_decay, p, g);
        const float s = hp.step == 1 ? g : __fmaf_rn(m0, hp.beta1, g);
        p = rnd<DT>(__fmaf_rn(-hp.lr, s, p));
        s1 = s;
    } else if (RULE == BNBD_OPTIM_LION) {
        if (hp.weight_decay > 0.0f) p = rnd<DT>(__fmul_rn(p, hp.decay));
        const float u = rnd<DT>(__fmul_rn(hp.lr, sgn(__fmaf_rn(m0, hp.beta1, __fmul_rn(__fsub_rn(1.0f, hp.beta1), g)))));
        s1 = __fmaf_rn(m0, hp.beta2, __fmul_rn(__fsub_rn(1.0f, hp.beta2), g));
        p = rnd<DT>(__fsub_rn(p, u));
    } else {  // RMSPROP: the decayed gradient feeds the state, the raw one the step
        const float raw = g;
        if (hp.weight_decay > 0.0f) g = __fmaf_rn(hp.weight_decay, p, g);
        const float s = __fmaf_rn(m0, hp.beta1, __fmul_rn(__fsub_rn(1.0f, hp.beta1), __fmul_rn(g, g)));
        p = rnd<DT>(__fmaf_rn(-hp.lr, __fdiv_rn(raw, __fadd_rn(__fsqrt_rn(s), hp.eps)), p));
        s1 = s;
    }
}

// A lane's inputs of one block: parameters, gradients, packed state codes and the block's old absmax.
struct BlockIn {
    float p[kPerLane], g[kPerLane];
    uint32_t w1[2], w2[2];
    float a1, a2;
};

// Loads a lane's inputs; src_* point at the block's first element. (Kept apart from process_block so that another
// source, e.g. a cp.async stage, can feed the same arithmetic: a staged variant was measured slower, see README.md.)
template <int DT, bool TWO, bool VEC>
__device__ __forceinline__ void load_block(BlockIn& in, const void* src_p, const void* src_g, const uint8_t* src_c1,
                                           const uint8_t* src_c2, const float* src_a1, const float* src_a2, int lane, int len) {
    in.a1 = *src_a1;
    in.a2 = TWO ? *src_a2 : 0.0f;
    load8<DT, VEC>(src_p, 0, lane, len, in.p);
    load8<DT, VEC>(src_g, 0, lane, len, in.g);
    load_codes<VEC>(src_c1, 0, lane, len, in.w1);
    if (TWO) load_codes<VEC>(src_c2, 0, lane, len, in.w2);
}

// Updates one state block (256 elements) of one tensor from a lane's inputs, by one warp, and stores parameters,
// codes and the new absmax. Parameters are stored as soon as they are updated, before the block's absmax is known,
// so their registers free up for the requantization.
template <int DT, int RULE, bool TABLE, bool VEC>
__device__ __forceinline__ void process_block(BlockIn& in, const bnbd_optim_tensor& d, int64_t lb, int len, int lane,
                                              const OptimSmem& sm, const float2* tab1, const float2* tab2,
                                              const bnbd_optim_hparams& hp) {
    constexpr bool TWO = RULE == BNBD_OPTIM_ADAM;
    const int64_t blk = lb * kBlock;
    float s1[kPerLane], s2[kPerLane];
    float max1 = 0.0f, max2 = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        bool counted = VEC || elem_off(lane, j) < len;
        const float m0 = __fmul_rn(sm.q1[code_of(in.w1, j)], in.a1);
        const float v0 = TWO ? __fmul_rn(sm.q2[code_of(in.w2, j)], in.a2) : 0.0f;
        s1[j] = 0.0f;
        s2[j] = 0.0f;
        if (counted) update<RULE, DT>(in.p[j], in.g[j], m0, v0, s1[j], s2[j], counted, hp);
        if (counted) {
            max1 = fmaxf(max1, fabsf(s1[j]));
            if (TWO) max2 = fmaxf(max2, fabsf(s2[j]));
        }
    }
    store8<DT, VEC>(d.param, blk, lane, len, in.p);
    max1 = stored_absmax(warp_max(max1));
    if (TWO) max2 = stored_absmax(warp_max(max2));

    uint32_t w1[2] = {0u, 0u}, w2[2] = {0u, 0u};
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        w1[j >> 2] |= uint32_t(signed_code<TABLE>(tab1, sm.mid1, sm.q1, s1[j], max1)) << (8 * (j & 3));
        if (TWO) w2[j >> 2] |= uint32_t(requant_code<TABLE>(tab2, sm.mid2, __fdiv_rn(s2[j], max2)) & 0xFF) << (8 * (j & 3));
    }
    store_codes<VEC>(static_cast<uint8_t*>(d.state1), blk, lane, len, w1);
    if (TWO) store_codes<VEC>(static_cast<uint8_t*>(d.state2), blk, lane, len, w2);
    if (lane == 0) {
        d.absmax1[lb] = max1;
        if (TWO) d.absmax2[lb] = max2;
    }
}

template <int DT, int RULE, bool TABLE, bool VEC>
__device__ __forceinline__ void optim8_block(const bnbd_optim_tensor& d, int64_t lb, int len, int lane, const OptimSmem& sm,
                                             const float2* tab1, const float2* tab2, const bnbd_optim_hparams& hp) {
    constexpr bool TWO = RULE == BNBD_OPTIM_ADAM;
    constexpr int ES = int(sizeof(typename DType<DT>::T));
    const int64_t blk = lb * kBlock;
    BlockIn in;
    load_block<DT, TWO, VEC>(in, static_cast<const char*>(d.param) + blk * ES, static_cast<const char*>(d.grad) + blk * ES,
                             static_cast<const uint8_t*>(d.state1) + blk, TWO ? static_cast<const uint8_t*>(d.state2) + blk : nullptr,
                             d.absmax1 + lb, TWO ? d.absmax2 + lb : nullptr, lane, len);
    process_block<DT, RULE, TABLE, VEC>(in, d, lb, len, lane, sm, tab1, tab2, hp);
}

// Asks L2 for `bytes` bytes at p (a hint: no register, no wait, no effect on results). sm_90: one bulk prefetch by
// one lane when p is 16-byte aligned; otherwise every lane prefetches its 32-byte sectors.
__device__ __forceinline__ void prefetch_l2(const void* p, int bytes, int lane, int who) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if ((reinterpret_cast<uintptr_t>(p) & 15u) == 0) {
        if (lane == who)
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(uint32_t(bytes)) : "memory");
        return;
    }
#endif
    for (int off = lane * 32; off < bytes; off += 32 * 32)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(static_cast<const char*>(p) + off));
}

// Prefetches into L2 what a warp will load for block lb of tensor d (params, grads, codes), when that block is a
// full block of the same tensor: while the warp computes its current block, its next one is on the way, so more
// bytes are in flight per SM without the registers or shared memory of a staged copy.
template <int DT, bool TWO>
__device__ __forceinline__ void prefetch_block(const bnbd_optim_tensor& d, int64_t lb, int lane) {
    constexpr int ES = int(sizeof(typename DType<DT>::T));
    if (lb < 0 || (lb + 1) * kBlock > d.numel) return;
    const int64_t blk = lb * kBlock;
    prefetch_l2(static_cast<const char*>(d.param) + blk * ES, kBlock * ES, lane, 0);
    prefetch_l2(static_cast<const char*>(d.grad) + blk * ES, kBlock * ES, lane, 1);
    prefetch_l2(static_cast<const uint8_t*>(d.state1) + blk, kBlock, lane, 2);
    if (TWO) prefetch_l2(static_cast<const uint8_t*>(d.state2) + blk, kBlock, lane, 3);
}

__device__ __forceinline__ int64_t blocks_of(int64_t numel) { return (numel + kBlock - 1) / kBlock; }

__device__ __forceinline__ bool aligned_dev(const void* p, uintptr_t a) {
    return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0;
}

// Walks the warp's blocks (w, w + W, ...) and the tensors they fall in; calls body(tensor, block in tensor, len, vec).
template <typename Body>
__device__ __forceinline__ void for_each_block(const bnbd_optim_tensor* __restrict__ tensors, int num_tensors,
                                               int64_t total_blocks, Body body) {
    const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
    int t = 0;
    bnbd_optim_tensor d = tensors[0];
    int64_t end = d.block_offset + blocks_of(d.numel);
    for (int64_t b = warp; b < total_blocks; b += nwarps) {
        while (b >= end && t + 1 < num_tensors) {
            d = tensors[++t];
            end = d.block_offset + blocks_of(d.numel);
        }
        if (b >= end) return;  // inconsistent total_blocks: never touch memory past the last tensor
        const int64_t lb = b - d.block_offset;
        const int64_t rem = d.numel - lb * kBlock;
        const int len = rem < kBlock ? int(rem) : kBlock;
        body(d, lb, len);
    }
}

template <int DT, int RULE, bool TABLE, bool PREFETCH>
__global__ void __launch_bounds__(kThreads, BNBD_OPTIM_MIN_CTAS) optim8_kernel(const bnbd_optim_tensor* __restrict__ tensors, int num_tensors,
                                                          int64_t total_blocks, const float* __restrict__ qmap1,
                                                          const float* __restrict__ qmap2, bnbd_optim_hparams hp) {
    constexpr bool TWO = RULE == BNBD_OPTIM_ADAM;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    OptimSmem& sm = *reinterpret_cast<OptimSmem*>(smem_raw);
    for (int j = threadIdx.x; j < 256; j += blockDim.x) {
        sm.q1[j] = __ldg(qmap1 + j);
        if (TWO) sm.q2[j] = __ldg(qmap2 + j);
    }
    q8_compute_mids(sm.mid1, qmap1);
    if (TWO) q8_compute_mids(sm.mid2, qmap2);
    __syncthreads();
    float2* tab1 = sm.tab;
    float2* tab2 = sm.tab + Q8_TABLE;
    if (TABLE) {
        q8_build_table<true>(tab1, sm.mid1);
        if (TWO) q8_build_table<true>(tab2, sm.mid2);
        __syncthreads();
    }
    const int lane = threadIdx.x & 31;
    const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
    for_each_block(tensors, num_tensors, total_blocks, [&](const bnbd_optim_tensor& d, int64_t lb, int len) {
        if (PREFETCH) prefetch_block<DT, TWO>(d, lb + nwarps, lane);  // the warp's next block, if in this tensor
        const bool vec = len == kBlock && aligned_dev(d.param, 16) && aligned_dev(d.grad, 16) &&
                         aligned_dev(d.state1, 4) && (!TWO || aligned_dev(d.state2, 4));
        if (vec) optim8_block<DT, RULE, TABLE, true>(d, lb, len, lane, sm, tab1, tab2, hp);
        else optim8_block<DT, RULE, TABLE, false>(d, lb, len, lane, sm, tab1, tab2, hp);
    });
}

// 32-bit states (TwoState32bit / OneState32bit): the same walk, f32 states.
template <int DT, int RULE, bool VEC>
__device__ __forceinline__ void step32_block(const bnbd_optim_tensor& d, int64_t lb, int len, int lane,
                                             const bnbd_optim_hparams& hp) {
    constexpr bool TWO = RULE == BNBD_OPTIM_ADAM;
    const int64_t blk = lb * kBlock;
    float p[kPerLane], g[kPerLane], m[kPerLane], v[kPerLane];
    load8<DT, VEC>(d.param, blk, lane, len, p);
    load8<DT, VEC>(d.grad, blk, lane, len, g);
    load8<BNBD_F32, VEC>(d.state1, blk, lane, len, m);
    if (TWO) load8<BNBD_F32, VEC>(d.state2, blk, lane, len, v);
    const float b1c = __fsub_rn(1.0f, hp.beta1), b2c = __fsub_rn(1.0f, hp.beta2);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        if (RULE == BNBD_OPTIM_ADAM) {
            m[j] = __fmaf_rn(m[j], hp.beta1, __fmul_rn(b1c, g[j]));
            v[j] = __fmaf_rn(v[j], hp.beta2, __fmul_rn(__fmul_rn(b2c, g[j]), g[j]));
            const float den = __fmaf_rn(hp.eps, hp.correction2, __fsqrt_rn(v[j]));
            const float q = rnd<DT>(__fmaf_rn(hp.step_size, __fdiv_rn(m[j], den), p[j]));
            p[j] = hp.weight_decay > 0.0f ? rnd<DT>(__fmul_rn(q, hp.decay)) : q;
        } else {
            float gj = g[j];
            if (hp.weight_decay > 0.0f && RULE != BNBD_OPTIM_LION) gj = rnd<DT>(__fmaf_rn(p[j], hp.weight_decay, gj));
            if (RULE == BNBD_OPTIM_MOMENTUM) {
                m[j] = hp.step == 1 ? gj : __fmaf_rn(m[j], hp.beta1, gj);
                p[j] = rnd<DT>(__fadd_rn(p[j], __fmul_rn(-hp.lr, m[j])));
            } else if (RULE == BNBD_OPTIM_LION) {
                const float d = sgn(__fmaf_rn(m[j], hp.beta1, __fmul_rn(b1c, gj)));
                p[j] = rnd<DT>(__fmaf_rn(p[j], hp.decay, __fmul_rn(-hp.lr, d)));
                m[j] = __fmaf_rn(m[j], hp.beta2, __fmul_rn(b2c, gj));
            } else {
                m[j] = __fmaf_rn(m[j], hp.beta1, __fmul_rn(__fmul_rn(b1c, gj), gj));
                p[j] = rnd<DT>(__fsub_rn(p[j], __fmul_rn(hp.lr, __fdiv_rn(gj, __fadd_rn(__fsqrt_rn(m[j]), hp.eps)))));
            }
        }
    }
    store8<DT, VEC>(d.param, blk, lane, len, p);
    store8<BNBD_F32, VEC>(d.state1, blk, lane, len, m);
    if (TWO) store8<BNBD_F32, VEC>(d.state2, blk, lane, len, v);
}

template <int DT, int RULE>
__global__ void __launch_bounds__(kThreads, BNBD_OPTIM_MIN_CTAS)
    step32_kernel(const bnbd_optim_tensor* __restrict__ tensors, int num_tensors, int64_t total_blocks,
                  bnbd_optim_hparams hp) {
    constexpr bool TWO = RULE == BNBD_OPTIM_ADAM;
    const int lane = threadIdx.x & 31;
    for_each_block(tensors, num_tensors, total_blocks, [&](const bnbd_optim_tensor& d, int64_t lb, int len) {
        const bool vec = len == kBlock && aligned_dev(d.param, 16) && aligned_dev(d.grad, 16) &&
                         aligned_dev(d.state1, 16) && (!TWO || aligned_dev(d.state2, 16));
        if (vec) step32_block<DT, RULE, true>(d, lb, len, lane, hp);
        else step32_block<DT, RULE, false>(d, lb, len, lane, hp);
    });
}

// Persistent grid: as many CTAs as fit on the device at once, no more than there are blocks for their warps.
template <typename K>
cudaError_t grid_for(K kernel, size_t smem, int64_t total_blocks, int* grid) {
    int sms = 0;
    const int e = sm_count(&sms);
    if (e != 0) return cudaError_t(e);
    int per_sm = 0;
    cudaError_t ce = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
    if (ce != cudaSuccess) return ce;
    const int64_t warps_needed = total_blocks;  // one warp per block
    const int64_t ctas_needed = (warps_needed + (kThreads / 32) - 1) / (kThreads / 32);
    *grid = int(std::max<int64_t>(1, std::min<int64_t>(ctas_needed, int64_t(std::max(1, per_sm)) * sms)));
    return cudaSuccess;
}

template <int DT, int RULE, bool TABLE, bool PREFETCH>
int launch8(const bnbd_optim_tensor* tensors, int num_tensors, int64_t total_blocks, const float* q1, const float* q2,
            const bnbd_optim_hparams& hp, cudaStream_t stream) {
    constexpr bool TWO = RULE == BNBD_OPTIM_ADAM;
    const size_t smem = offsetof(OptimSmem, tab) + (TABLE ? (TWO ? 2 : 1) * Q8_TABLE * sizeof(float2) : sizeof(float2));
    auto kernel = optim8_kernel<DT, RULE, TABLE, PREFETCH>;
    BNBD_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    int grid = 0;
    BNBD_RETURN_IF_ERROR(grid_for(kernel, smem, total_blocks, &grid));
    kernel<<<grid, kThreads, smem, stream>>>(tensors, num_tensors, total_blocks, q1, q2, hp);
    BNBD_CHECK_LAUNCH();
    return 0;
}

template <int DT, int RULE>
int dispatch_search(const bnbd_optim_tensor* t, int nt, int64_t tb, const float* q1, const float* q2,
                    const bnbd_optim_hparams& hp, cudaStream_t s) {
    const int m = g_optim_search_mode;
    if (m == 2) return launch8<DT, RULE, false, false>(t, nt, tb, q1, q2, hp, s);
    const bool prefetch = m == 3 || (m == 0 && optim_prefetch_default() != 0);
    return prefetch ? launch8<DT, RULE, true, true>(t, nt, tb, q1, q2, hp, s)
                    : launch8<DT, RULE, true, false>(t, nt, tb, q1, q2, hp, s);
}

template <int DT>
int dispatch_rule(int rule, const bnbd_optim_tensor* t, int nt, int64_t tb, const float* q1, const float* q2,
                  const bnbd_optim_hparams& hp, cudaStream_t s) {
    switch (rule) {
        case BNBD_OPTIM_ADAM: return dispatch_search<DT, BNBD_OPTIM_ADAM>(t, nt, tb, q1, q2, hp, s);
        case BNBD_OPTIM_MOMENTUM: return dispatch_search<DT, BNBD_OPTIM_MOMENTUM>(t, nt, tb, q1, q2, hp, s);
        case BNBD_OPTIM_LION: return dispatch_search<DT, BNBD_OPTIM_LION>(t, nt, tb, q1, q2, hp, s);
        default: return dispatch_search<DT, BNBD_OPTIM_RMSPROP>(t, nt, tb, q1, q2, hp, s);
    }
}

template <int DT, int RULE>
int launch32(const bnbd_optim_tensor* t, int nt, int64_t tb, const bnbd_optim_hparams& hp, cudaStream_t s) {
    auto kernel = step32_kernel<DT, RULE>;
    int grid = 0;
    BNBD_RETURN_IF_ERROR(grid_for(kernel, 0, tb, &grid));
    kernel<<<grid, kThreads, 0, s>>>(t, nt, tb, hp);
    BNBD_CHECK_LAUNCH();
    return 0;
}

template <int DT>
int dispatch32(int rule, const bnbd_optim_tensor* t, int nt, int64_t tb, const bnbd_optim_hparams& hp, cudaStream_t s) {
    switch (rule) {
        case BNBD_OPTIM_ADAM: return launch32<DT, BNBD_OPTIM_ADAM>(t, nt, tb, hp, s);
        case BNBD_OPTIM_MOMENTUM: return launch32<DT, BNBD_OPTIM_MOMENTUM>(t, nt, tb, hp, s);
        case BNBD_OPTIM_LION: return launch32<DT, BNBD_OPTIM_LION>(t, nt, tb, hp, s);
        default: return launch32<DT, BNBD_OPTIM_RMSPROP>(t, nt, tb, hp, s);
    }
}

}  // namespace
}  // namespace bnbd

extern "C" BNBD_API int bnbd_optimizer_8bit_blockwise(int rule, int dtype, const bnbd_optim_tensor* tensors,
                                                      int num_tensors, int64_t total_blocks, const float* qmap1,
                                                      const float* qmap2, const bnbd_optim_hparams* hp, void* stream) {
    using namespace bnbd;
    BNBD_REQUIRE(valid_dtype(dtype) && hp != nullptr && tensors != nullptr && qmap1 != nullptr);
    BNBD_REQUIRE(rule >= BNBD_OPTIM_ADAM && rule <= BNBD_OPTIM_RMSPROP);
    BNBD_REQUIRE(rule != BNBD_OPTIM_ADAM || qmap2 != nullptr);
    BNBD_REQUIRE(num_tensors >= 0 && total_blocks >= 0);
    if (num_tensors == 0 || total_blocks == 0) return 0;
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
        case BNBD_F32: return dispatch_rule<BNBD_F32>(rule, tensors, num_tensors, total_blocks, qmap1, qmap2, *hp, s);
        case BNBD_BF16: return dispatch_rule<BNBD_BF16>(rule, tensors, num_tensors, total_blocks, qmap1, qmap2, *hp, s);
        default: return dispatch_rule<BNBD_F16>(rule, tensors, num_tensors, total_blocks, qmap1, qmap2, *hp, s);
    }
}

extern "C" BNBD_API int bnbd_optimizer_32bit(int rule, int dtype, const bnbd_optim_tensor* tensors, int num_tensors,
                                             int64_t total_blocks, const bnbd_optim_hparams* hp, void* stream) {
    using namespace bnbd;
    BNBD_REQUIRE(valid_dtype(dtype) && hp != nullptr && tensors != nullptr);
    BNBD_REQUIRE(rule >= BNBD_OPTIM_ADAM && rule <= BNBD_OPTIM_RMSPROP);
    BNBD_REQUIRE(num_tensors >= 0 && total_blocks >= 0);
    if (num_tensors == 0 || total_blocks == 0) return 0;
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
        case BNBD_F32: return dispatch32<BNBD_F32>(rule, tensors, num_tensors, total_blocks, *hp, s);
        case BNBD_BF16: return dispatch32<BNBD_BF16>(rule, tensors, num_tensors, total_blocks, *hp, s);
        default: return dispatch32<BNBD_F16>(rule, tensors, num_tensors, total_blocks, *hp, s);
    }
}
