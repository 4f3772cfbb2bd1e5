// Blockwise quantization kernel shared by the 8-bit and 4-bit quantizers.
//
// Grid: persistent (balanced_grid: the fewest CTAs that finish in the minimal number of rounds, at most
// SMs x occupancy), a grid-stride loop over tiles of QT_TILE = 4096 consecutive elements; each CTA builds its
// code table in shared memory once. Block: 512 threads (f32) or 256 (bf16/f16), two 16-byte vectors per
// thread (4 f32 or 8 bf16/f16 elements each) held in registers: vector slot i of thread t is vector
// p = i*THREADS + t of the tile, so each warp-wide load is 512 contiguous bytes. The next tile's vectors are
// loaded (raw) while the current one is processed. A tile holds 4096/bs whole quantization blocks; full tiles
// take a path without per-element bounds checks.
// absmax per block: G = bs/VEC consecutive vectors share a block. G <= 32: xor-shuffle reduction inside
// aligned groups of G lanes (several blocks per warp, no barrier). bs = 4096: one warp reduction, one
// barrier, one reciprocal per tile. Otherwise (G > 32): per-warp partials in shared memory (one barrier per
// tile, double-buffered), then each warp combines groups of G/32 partials with shuffles.
// Then xn = x * (1/absmax) (both IEEE RN) and Coder::encode_n turns a vector of xn into codes (its table
// loads all in flight together), stored as bytes (8-bit) or nibble pairs (4-bit).
#ifndef BNBDIST_SRC_QUANT_TILE_CUH
#define BNBDIST_SRC_QUANT_TILE_CUH

#include <atomic>

#include "common.cuh"
#include "codesearch.cuh"

namespace bnbd {

constexpr int QT_TILE = 4096;  // a multiple of every blocksize (32..4096)

#ifndef BNBD_QT_MINB16
#define BNBD_QT_MINB16 4  // CTAs per SM the 16-bit instantiations are compiled for
#endif

// Per dtype: 2 vectors per thread (8 f32 or 16 bf16/f16 elements), so 512 threads for f32 and 256 otherwise.
template <int DT> struct QtCfg {
    static constexpr int VEC = DType<DT>::VEC;
    static constexpr int NV = 2;
    static constexpr int THREADS = QT_TILE / (NV * VEC);
    // register cap 64 per thread (f32: 2 x 512 threads; 16-bit: BNBD_QT_MINB16 x 256 threads)
    static constexpr int MIN_BLOCKS = VEC == 4 ? 2 : BNBD_QT_MINB16;
};

struct Q8TableCoder {
    static constexpr int BITS = 8;
    static constexpr int PAD = 0;
    struct Smem {
        float mid[256];
        float2 tab[Q8_TABLE];
    };
    __device__ __forceinline__ static void init(Smem& s, const float* code) {
        q8_compute_mids(s.mid, code);
        __syncthreads();
        q8_build_table(s.tab, s.mid);
    }
    __device__ __forceinline__ static int encode(const Smem& s, float xn) { return q8_search_table(s.tab, s.mid, xn); }
    template <int N>
    __device__ __forceinline__ static void encode_n(const Smem& s, const float* xn, int* c) {
        q8_search_table_n<N>(s.tab, s.mid, xn, c);
    }
};

struct Q8PlainCoder {
    static constexpr int BITS = 8;
    static constexpr int PAD = 0;
    struct Smem {
        float mid[256];
    };
    __device__ __forceinline__ static void init(Smem& s, const float* code) { q8_compute_mids(s.mid, code); }
    __device__ __forceinline__ static int encode(const Smem& s, float xn) { return q8_search_plain(s.mid, xn); }
    template <int N>
    __device__ __forceinline__ static void encode_n(const Smem& s, const float* xn, int* c) {
#pragma unroll
        for (int j = 0; j < N; ++j) c[j] = encode(s, xn[j]);
    }
};

struct NF4Coder {
    static constexpr int BITS = 4;
    static constexpr int PAD = 7;  // code of 0.0
    struct Smem {
        float2 tab[NF4_TABLE];
    };
    __device__ __forceinline__ static void init(Smem& s, const float*) { nf4_build_table(s.tab); }
    __device__ __forceinline__ static int encode(const Smem& s, float xn) { return nf4_table(s.tab, xn); }
    template <int N>
    __device__ __forceinline__ static void encode_n(const Smem& s, const float* xn, int* c) {
#pragma unroll
        for (int j = 0; j < N; ++j) c[j] = encode(s, xn[j]);
    }
};

struct FP4Coder {
    static constexpr int BITS = 4;
    static constexpr int PAD = 0;  // code of 0.0
    struct Smem {
        float2 tab[FP4_TABLE];
    };
    __device__ __forceinline__ static void init(Smem& s, const float*) { fp4_build_table(s.tab); }
    __device__ __forceinline__ static int encode(const Smem& s, float xn) { return fp4_table(s.tab, xn); }
    template <int N>
    __device__ __forceinline__ static void encode_n(const Smem& s, const float* xn, int* c) {
#pragma unroll
        for (int j = 0; j < N; ++j) c[j] = encode(s, xn[j]);
    }
};

__device__ __forceinline__ uint32_t pack_bytes4(int b0, int b1, int b2, int b3) {
    return uint32_t(b0) | (uint32_t(b1) << 8) | (uint32_t(b2) << 16) | (uint32_t(b3) << 24);
}

template <class Coder, int DT, bool ALIGNED>
__global__ void __launch_bounds__(QtCfg<DT>::THREADS, QtCfg<DT>::MIN_BLOCKS)
    quant_tile_kernel(const void* __restrict__ Av, const float* __restrict__ code, const float* __restrict__ sub_offset,
                      float* __restrict__ absmax, uint8_t* __restrict__ out, int64_t n, int log2bs, int64_t ntiles,
                      bool early_init) {
    using Tr = DType<DT>;
    using T = typename Tr::T;
    constexpr int VEC = Tr::VEC;
    constexpr int NV = QtCfg<DT>::NV;
    constexpr int THREADS = QtCfg<DT>::THREADS;
    constexpr int NRED = NV * THREADS / 32;  // warp partials per tile (16 or 32)
    static_assert(THREADS * NV * VEC == QT_TILE && NRED <= 32, "tile layout");

    __shared__ typename Coder::Smem s_coder;
    __shared__ float s_red[2][NRED];

    const T* __restrict__ A = static_cast<const T*>(Av);
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int log2G = log2bs - (VEC == 4 ? 2 : 3);  // vectors per block = 2^log2G >= 4
    const int G = 1 << log2G;
    const bool has_off = sub_offset != nullptr;
    float off = 0.0f;  // *sub_offset, read after pdl_wait (the previous kernel may be the mean writing it)
    const int64_t nfull = n / QT_TILE;  // tiles [0, nfull) lie entirely inside [0, n)

    // A dependent kernel launched with programmatic dependent launch (e.g. the deterministic mean after the
    // 4-bit quantizer) may be scheduled now: it waits (griddepcontrol.wait) for this grid to complete before
    // it reads anything this kernel writes, and this persistent grid is entirely resident already.
    pdl_trigger();
    int64_t t = blockIdx.x;
    if (t >= ntiles) return;  // uniform per CTA
    int parity = 0;

    float x[NV][VEC];  // the tile being quantized (f32, offset already subtracted; 0 outside [0, n))
    uint4 raw[NV];     // the next tile's 16-byte vectors, in flight while the current tile is processed

    // Element offset of vector slot i of this thread inside a tile.
    auto slot = [&](int i) { return (i * THREADS + tid) * VEC; };

    // issue the 16-byte loads of a tile (aligned path; only vectors entirely inside [0, n))
    auto prefetch = [&](int64_t tile) {
        if constexpr (ALIGNED) {
            const T* __restrict__ p = A + tile * QT_TILE;
            if (tile < nfull) {
#pragma unroll
                for (int i = 0; i < NV; ++i) raw[i] = __ldg(reinterpret_cast<const uint4*>(p + slot(i)));
            } else {
                const int64_t rem = n - tile * QT_TILE;
#pragma unroll
                for (int i = 0; i < NV; ++i)
                    if (slot(i) + VEC <= rem) raw[i] = __ldg(reinterpret_cast<const uint4*>(p + slot(i)));
            }
        }
    };
    // turn the prefetched vectors (or element loads: tail, misaligned path) into x
    auto unpack_tile = [&](int64_t tile) {
        if (ALIGNED && tile < nfull) {
#pragma unroll
            for (int i = 0; i < NV; ++i) Tr::unpack(raw[i], x[i]);
        } else {
            const T* __restrict__ p = A + tile * QT_TILE;
            const int64_t rem = n - tile * QT_TILE;
#pragma unroll
            for (int i = 0; i < NV; ++i) {
                if (ALIGNED && slot(i) + VEC <= rem) {
                    Tr::unpack(raw[i], x[i]);
                } else {
#pragma unroll
                    for (int j = 0; j < VEC; ++j) x[i][j] = (slot(i) + j < rem) ? Tr::load(p, slot(i) + j) : 0.0f;
                }
            }
        }
        if (has_off) {
            const int64_t rem = n - tile * QT_TILE;
#pragma unroll
            for (int i = 0; i < NV; ++i)
#pragma unroll
                for (int j = 0; j < VEC; ++j)
                    x[i][j] = (slot(i) + j < rem) ? __fsub_rn(x[i][j], off) : 0.0f;  // padding stays 0
        }
    };

    if (early_init) {
        // launched with programmatic dependent launch: build the tables (from `code`, which the kernels that
        // trigger early never write) while the previous kernel finishes, then wait for it
        Coder::init(s_coder, code);
        pdl_wait();
        prefetch(t);
    } else {
        prefetch(t);  // in flight while the code tables are built
        Coder::init(s_coder, code);
    }
    if (has_off) off = __ldg(sub_offset);
    __syncthreads();
    unpack_tile(t);

    for (;;) {
        const int64_t base = t * QT_TILE;
        const int rem = int(n - base < QT_TILE ? n - base : QT_TILE);  // valid elements of this tile
        const int64_t t_next = t + gridDim.x;
        if (t_next < ntiles) prefetch(t_next);

        // ---- absmax per quantization block and its IEEE reciprocal
        float inv[NV];
        {
            float m[NV];
#pragma unroll
            for (int i = 0; i < NV; ++i) {
                float v = 0.0f;
#pragma unroll
                for (int j = 0; j < VEC; ++j) v = absmax_step(v, x[i][j]);
                m[i] = v;
            }
            if (G <= 32) {
#pragma unroll
                for (int i = 0; i < NV; ++i) {
                    const float v = warp_max_xor(m[i], G);
                    if ((tid & (G - 1)) == 0 && slot(i) < rem) absmax[(base + slot(i)) >> log2bs] = v;
                    inv[i] = __frcp_rn(v);
                }
            } else if (G * VEC == QT_TILE) {
                // one block per tile (bs = 4096): one warp reduction, one barrier, one reciprocal
                float w = m[0];
#pragma unroll
                for (int i = 1; i < NV; ++i) w = fmaxf(w, m[i]);
                w = warp_max_all(w);
                if (lane == 0) s_red[parity][warp] = w;
                __syncthreads();
                float v = lane < THREADS / 32 ? s_red[parity][lane] : 0.0f;
                v = warp_max_all(v);
                if (tid == 0) absmax[base >> log2bs] = v;
                const float r = __frcp_rn(v);
#pragma unroll
                for (int i = 0; i < NV; ++i) inv[i] = r;
            } else {
                // one barrier per tile: per-warp partials (double-buffered by tile parity), then every warp
                // combines them itself: lane l holds partial l, groups of GW lanes form one block
#pragma unroll
                for (int i = 0; i < NV; ++i) {
                    const float w = warp_max_all(m[i]);
                    if (lane == 0) s_red[parity][i * (THREADS / 32) + warp] = w;
                }
                __syncthreads();
                const int GW = G >> 5;  // partials per block: 2..32, divides NRED
                float v = lane < NRED ? s_red[parity][lane] : 0.0f;
                v = warp_max_xor(v, GW);
                if (warp == 0 && lane < NRED && (lane & (GW - 1)) == 0) {
                    const int o = lane * 32 * VEC;
                    if (o < rem) absmax[(base + o) >> log2bs] = v;
                }
#pragma unroll
                for (int i = 0; i < NV; ++i) {
                    // partial index of this slot's block: ((i * THREADS + tid) / G) * GW
                    const int src = (((i * THREADS + tid) >> log2G) * GW) & 31;
                    inv[i] = __frcp_rn(__shfl_sync(0xFFFFFFFFu, v, src));
                }
            }
        }
        parity ^= 1;

        // ---- codes
        uint8_t* __restrict__ o_tile = out + (Coder::BITS == 8 ? base : base >> 1);
#pragma unroll
        for (int i = 0; i < NV; ++i) {
            float xn[VEC];
#pragma unroll
            for (int j = 0; j < VEC; ++j) xn[j] = __fmul_rn(x[i][j], inv[i]);
            int c[VEC];
            Coder::template encode_n<VEC>(s_coder, xn, c);
            const int o = slot(i);
            const bool whole = ALIGNED && (rem == QT_TILE || o + VEC <= rem);
            if constexpr (Coder::BITS == 8) {
                if (whole) {
                    if constexpr (VEC == 4) {
                        *reinterpret_cast<uint32_t*>(o_tile + o) = pack_bytes4(c[0], c[1], c[2], c[3]);
                    } else {
                        uint2 w;
                        w.x = pack_bytes4(c[0], c[1], c[2], c[3]);
                        w.y = pack_bytes4(c[4], c[5], c[6], c[7]);
                        *reinterpret_cast<uint2*>(o_tile + o) = w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < VEC; ++j)
                        if (o + j < rem) o_tile[o + j] = uint8_t(c[j]);
                }
            } else {
                // byte k of the vector = (code[2k] << 4) | code[2k+1]
                if (whole) {
                    if constexpr (VEC == 4) {
                        *reinterpret_cast<uint16_t*>(o_tile + (o >> 1)) =
                            uint16_t(((c[0] << 4) | c[1]) | (((c[2] << 4) | c[3]) << 8));
                    } else {
                        *reinterpret_cast<uint32_t*>(o_tile + (o >> 1)) = pack_bytes4(
                            (c[0] << 4) | c[1], (c[2] << 4) | c[3], (c[4] << 4) | c[5], (c[6] << 4) | c[7]);
                    }
                } else {
#pragma unroll
                    for (int k = 0; k < VEC / 2; ++k) {
                        const int e = o + 2 * k;
                        if (e < rem) {
                            const int low = (e + 1 < rem) ? c[2 * k + 1] : Coder::PAD;
                            o_tile[e >> 1] = uint8_t((c[2 * k] << 4) | low);
                        }
                    }
                }
            }
        }

        if (t_next >= ntiles) break;
        t = t_next;
        unpack_tile(t);
    }
}

// ---------------------------------------------------------------------------------------------------------
// bs = 4096 (one quantization block per tile), aligned input: the same arithmetic as quant_tile_kernel, but the
// tiles are staged through shared memory with cp.async (16-byte copies, L1 bypassed) instead of a register
// prefetch. That frees the prefetch registers (sm_90: 48 instead of 64 per thread for bf16; f16 takes 56), so 5
// CTAs of 256 threads fit an SM instead of 4 (shared memory: code table + QK_DEPTH + 1 stages of 8 KiB), and the
// barrier of each tile (one quantization block per tile: warp max -> shared memory -> __syncthreads -> block
// max) stalls a smaller share of the SM's warps. The copies run QK_DEPTH tiles ahead of the tile being
// reduced. Each thread copies and later reads only its own two vectors of a tile, so a stage needs no barrier
// between its copy and its use (cp.async.wait_group makes a thread's own copies visible to it), nor before
// it is refilled (the thread itself has read it, into registers it has consumed). Vectors of the last tile
// that cross n are loaded element by element when the tile is read. (Measured on an H100, bf16 n = 2^28:
// QK_DEPTH 1 beat 2 and 3, which cost a CTA per SM in shared memory, and beat an mbarrier-split variant that
// encodes the previous tile before waiting for the partials of the current one.)
// QK_DEPTH 0: one stage, refilled right after the tile's values have been read and reduced.
#ifndef BNBD_QK_DEPTH
#define BNBD_QK_DEPTH 1
#endif
#ifndef BNBD_QK_MINB
#define BNBD_QK_MINB 0  // CTAs per SM to compile for (0: as quant_tile_kernel)
#endif
#ifndef BNBD_QK_F32
#define BNBD_QK_F32 0  // f32 inputs keep quant_tile_kernel (it meets its target; 1: this kernel for f32 too)
#endif
#ifndef BNBD_QK_OFF
#define BNBD_QK_OFF 0  // 1: never take this kernel (comparison builds)
#endif
constexpr int QK_DEPTH = BNBD_QK_DEPTH;
constexpr int QK_STAGES = QK_DEPTH + 1;
template <int DT> struct QkCfg {
    static constexpr int MIN_BLOCKS = BNBD_QK_MINB > 0 ? BNBD_QK_MINB : QtCfg<DT>::MIN_BLOCKS;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Dynamic shared memory of quant_tile4k_kernel: the stage ring.
template <int DT>
constexpr int qk_stage_bytes() {
    return QK_STAGES * QtCfg<DT>::NV * QtCfg<DT>::THREADS * 16;
}

template <class Coder, int DT>
__global__ void __launch_bounds__(QtCfg<DT>::THREADS, QkCfg<DT>::MIN_BLOCKS)
    quant_tile4k_kernel(const void* __restrict__ Av, const float* __restrict__ code,
                        const float* __restrict__ sub_offset, float* __restrict__ absmax, uint8_t* __restrict__ out,
                        int64_t n, int64_t ntiles, bool early_init) {
    using Tr = DType<DT>;
    using T = typename Tr::T;
    constexpr int VEC = Tr::VEC;
    constexpr int NV = QtCfg<DT>::NV;
    constexpr int THREADS = QtCfg<DT>::THREADS;
    constexpr int NW = THREADS / 32;
    constexpr int SV = NV * THREADS;  // 16-byte vectors per stage
    static_assert(THREADS * NV * VEC == QT_TILE && NW <= 32 && QK_DEPTH >= 0, "tile layout");

    __shared__ typename Coder::Smem s_coder;
    __shared__ float s_red[2][NW];
    extern __shared__ uint4 s_stage[];  // [QK_STAGES][SV]

    pdl_trigger();  // see quant_tile_kernel
    const T* __restrict__ A = static_cast<const T*>(Av);
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const bool has_off = sub_offset != nullptr;
    const int64_t t0 = blockIdx.x;
    if (t0 >= ntiles) return;  // uniform per CTA
    const int K = int((ntiles - t0 + gridDim.x - 1) / gridDim.x);  // this CTA's tiles: t0 + k * gridDim.x
    float off = 0.0f;

    auto slot = [&](int i) { return (i * THREADS + tid) * VEC; };
    auto tile_of = [&](int k) { return t0 + int64_t(k) * gridDim.x; };
    auto valid = [&](int64_t tile) {
        const int64_t r = n - tile * QT_TILE;
        return r < QT_TILE ? int(r) : QT_TILE;
    };
    auto stage = [&](int k, int i) { return s_stage + (k % QK_STAGES) * SV + i * THREADS + tid; };
    // copies of this thread's vectors of tile k (those entirely inside [0, n)); one commit group per call
    auto issue = [&](int k) {
        if (k < K) {
            const int64_t tile = tile_of(k);
            const T* __restrict__ p = A + tile * QT_TILE;
            const int rem = valid(tile);
#pragma unroll
            for (int i = 0; i < NV; ++i)
                if (slot(i) + VEC <= rem) cp_async16(stage(k, i), p + slot(i));
        }
        cp_async_commit();
    };
    // f32 values of tile k (offset subtracted; 0 outside [0, n)), from the stage; its copies are complete
    auto read_tile = [&](int k, int64_t tile, int rem, float (&x)[NV][VEC]) {
        const T* __restrict__ p = A + tile * QT_TILE;
#pragma unroll
        for (int i = 0; i < NV; ++i) {
            if (slot(i) + VEC <= rem) {
                Tr::unpack(*stage(k, i), x[i]);
            } else {
#pragma unroll
                for (int j = 0; j < VEC; ++j) x[i][j] = (slot(i) + j < rem) ? Tr::load(p, slot(i) + j) : 0.0f;
            }
        }
        if (has_off) {
#pragma unroll
            for (int i = 0; i < NV; ++i)
#pragma unroll
                for (int j = 0; j < VEC; ++j) x[i][j] = (slot(i) + j < rem) ? __fsub_rn(x[i][j], off) : 0.0f;
        }
    };
    auto warp_partial = [&](const float (&x)[NV][VEC]) {
        float w = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; ++i)
#pragma unroll
            for (int j = 0; j < VEC; ++j) w = absmax_step(w, x[i][j]);
        return warp_max_all(w);
    };
    auto encode = [&](const float (&x)[NV][VEC], int64_t tile, int rem, float inv) {
        uint8_t* __restrict__ o_tile = out + (Coder::BITS == 8 ? tile * QT_TILE : (tile * QT_TILE) >> 1);
#pragma unroll
        for (int i = 0; i < NV; ++i) {
            float xn[VEC];
#pragma unroll
            for (int j = 0; j < VEC; ++j) xn[j] = __fmul_rn(x[i][j], inv);
            int c[VEC];
            Coder::template encode_n<VEC>(s_coder, xn, c);
            const int o = slot(i);
            const bool whole = rem == QT_TILE || o + VEC <= rem;
            if constexpr (Coder::BITS == 8) {
                if (whole) {
                    if constexpr (VEC == 4) {
                        *reinterpret_cast<uint32_t*>(o_tile + o) = pack_bytes4(c[0], c[1], c[2], c[3]);
                    } else {
                        uint2 w;
                        w.x = pack_bytes4(c[0], c[1], c[2], c[3]);
                        w.y = pack_bytes4(c[4], c[5], c[6], c[7]);
                        *reinterpret_cast<uint2*>(o_tile + o) = w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < VEC; ++j)
                        if (o + j < rem) o_tile[o + j] = uint8_t(c[j]);
                }
            } else {
                if (whole) {
                    if constexpr (VEC == 4) {
                        *reinterpret_cast<uint16_t*>(o_tile + (o >> 1)) =
                            uint16_t(((c[0] << 4) | c[1]) | (((c[2] << 4) | c[3]) << 8));
                    } else {
                        *reinterpret_cast<uint32_t*>(o_tile + (o >> 1)) = pack_bytes4(
                            (c[0] << 4) | c[1], (c[2] << 4) | c[3], (c[4] << 4) | c[5], (c[6] << 4) | c[7]);
                    }
                } else {
#pragma unroll
                    for (int q = 0; q < VEC / 2; ++q) {
                        const int e = o + 2 * q;
                        if (e < rem) {
                            const int low = (e + 1 < rem) ? c[2 * q + 1] : Coder::PAD;
                            o_tile[e >> 1] = uint8_t((c[2 * q] << 4) | low);
                        }
                    }
                }
            }
        }
    };

    constexpr int AHEAD = QK_DEPTH > 0 ? QK_DEPTH : 1;  // tiles issued before the loop
    if (early_init) {
        // programmatic dependent launch: tables first (from `code`, see quant_tile_kernel), then wait
        Coder::init(s_coder, code);
        pdl_wait();
        for (int d = 0; d < AHEAD; ++d) issue(d);
    } else {
        for (int d = 0; d < AHEAD; ++d) issue(d);  // in flight while the code tables are built
        Coder::init(s_coder, code);
    }
    if (has_off) off = __ldg(sub_offset);
    __syncthreads();

    for (int k = 0; k < K; ++k) {
        if constexpr (QK_DEPTH > 0) {
            issue(k + QK_DEPTH);        // refills the stage of tile k - 1
            cp_async_wait<QK_DEPTH>();  // this thread's copies of tile k are complete
        } else {
            cp_async_wait<0>();
        }
        const int64_t tile = tile_of(k);
        const int rem = valid(tile);
        float x[NV][VEC];
        read_tile(k, tile, rem, x);
        const float w = warp_partial(x);
        if constexpr (QK_DEPTH == 0) issue(k + 1);  // x has been consumed: the stage is free
        if (lane == 0) s_red[k & 1][warp] = w;  // rewritten two tiles later, after the next barrier
        __syncthreads();
        float v = lane < NW ? s_red[k & 1][lane] : 0.0f;
        v = warp_max_all(v);
        if (tid == 0) absmax[tile] = v;
        encode(x, tile, rem, __frcp_rn(v));
    }
}

// Whether launch_quant_tile takes quant_tile4k_kernel.
inline bool use_quant_tile4k(int dtype, bool aligned, int log2bs) {
    return !BNBD_QK_OFF && aligned && log2bs == 12 && (dtype != BNBD_F32 || BNBD_QK_F32);
}

// Allows the stage ring of quant_tile4k_kernel<Coder, DT> as dynamic shared memory (once per instantiation and
// device).
template <class Coder, int DT>
cudaError_t qk_prepare() {
    static std::atomic<uint64_t> done{0};  // bit d: done for device d (< 64)
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    const uint64_t bit = dev >= 0 && dev < 64 ? (uint64_t(1) << dev) : 0;
    if (bit && (done.load(std::memory_order_relaxed) & bit)) return cudaSuccess;
    e = cudaFuncSetAttribute(quant_tile4k_kernel<Coder, DT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             qk_stage_bytes<DT>());
    if (e == cudaSuccess) done.fetch_or(bit, std::memory_order_relaxed);
    return e;
}

// Launch helper: picks the dtype/alignment instantiation; `grid` CTAs loop over the tiles. With `pdl` the
// launch allows programmatic dependent launch (used for small inputs, where the table build is a large share).
template <class Coder>
int launch_quant_tile(int dtype, bool aligned, const void* A, const float* code, const float* sub_offset,
                      float* absmax, uint8_t* out, int64_t n, int log2bs, int64_t grid, cudaStream_t stream,
                      bool pdl = false) {
    const int64_t ntiles = (n + QT_TILE - 1) / QT_TILE;
    const dim3 g((unsigned)grid);
    cudaError_t e = cudaSuccess;
#define BNBD_QT_LAUNCH(DT, AL)                                                                                   \
    do {                                                                                                       \
        if (pdl)                                                                                               \
            e = launch_pdl(quant_tile_kernel<Coder, DT, AL>, g, dim3(QtCfg<DT>::THREADS), stream, A, code,     \
                           sub_offset, absmax, out, n, log2bs, ntiles, true);                                  \
        else                                                                                                   \
            quant_tile_kernel<Coder, DT, AL><<<g, dim3(QtCfg<DT>::THREADS), 0, stream>>>(                      \
                A, code, sub_offset, absmax, out, n, log2bs, ntiles, false);                                   \
    } while (0)
#define BNBD_QK_LAUNCH(DT)                                                                                       \
    do {                                                                                                       \
        e = qk_prepare<Coder, DT>();                                                                           \
        if (e != cudaSuccess) break;                                                                           \
        if (pdl)                                                                                               \
            e = launch_pdl_smem(quant_tile4k_kernel<Coder, DT>, g, dim3(QtCfg<DT>::THREADS),                   \
                                size_t(qk_stage_bytes<DT>()), stream, A, code, sub_offset, absmax, out, n,     \
                                ntiles, true);                                                                 \
        else                                                                                                   \
            quant_tile4k_kernel<Coder, DT><<<g, dim3(QtCfg<DT>::THREADS), qk_stage_bytes<DT>(), stream>>>(     \
                A, code, sub_offset, absmax, out, n, ntiles, false);                                           \
    } while (0)
    if (use_quant_tile4k(dtype, aligned, log2bs)) {
        if (dtype == BNBD_F32) BNBD_QK_LAUNCH(BNBD_F32);
        else if (dtype == BNBD_BF16) BNBD_QK_LAUNCH(BNBD_BF16);
        else BNBD_QK_LAUNCH(BNBD_F16);
    } else if (dtype == BNBD_F32) {
        if (aligned) BNBD_QT_LAUNCH(BNBD_F32, true); else BNBD_QT_LAUNCH(BNBD_F32, false);
    } else if (dtype == BNBD_BF16) {
        if (aligned) BNBD_QT_LAUNCH(BNBD_BF16, true); else BNBD_QT_LAUNCH(BNBD_BF16, false);
    } else {
        if (aligned) BNBD_QT_LAUNCH(BNBD_F16, true); else BNBD_QT_LAUNCH(BNBD_F16, false);
    }
#undef BNBD_QT_LAUNCH
#undef BNBD_QK_LAUNCH
    BNBD_RETURN_IF_ERROR(e);
    BNBD_CHECK_LAUNCH();
    return 0;
}

// Persistent grid for ntiles tiles and at most `cap` resident CTAs: as many rounds as needed, and then the
// fewest CTAs that still finish in that many rounds, so that no short last round leaves the GPU mostly idle.
inline int64_t balanced_grid(int64_t ntiles, int64_t cap) {
    if (cap < 1) cap = 1;
    if (ntiles <= cap) return ntiles < 1 ? 1 : ntiles;
    const int64_t rounds = (ntiles + cap - 1) / cap;
    return (ntiles + rounds - 1) / rounds;
}

// CTAs per SM the tile kernel can hold (occupancy of the aligned instantiation; 1 at least), cached.
template <class Coder, int DT, bool K4>
int quant_tile_blocks_per_sm_dt() {
    static const int cached = [] {
        int nb = 0;
        cudaError_t e;
        if constexpr (K4) {
            e = qk_prepare<Coder, DT>();
            if (e == cudaSuccess)
                e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, quant_tile4k_kernel<Coder, DT>,
                                                                  QtCfg<DT>::THREADS, qk_stage_bytes<DT>());
        } else
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, quant_tile_kernel<Coder, DT, true>,
                                                              QtCfg<DT>::THREADS, 0);
        if (e != cudaSuccess || nb < 1) {
            (void)cudaGetLastError();
            nb = 1;
        }
        return nb;
    }();
    return cached;
}

// Occupancy of the kernel launch_quant_tile picks for these arguments.
template <class Coder>
int quant_tile_blocks_per_sm(int dtype, bool aligned, int log2bs) {
    if (use_quant_tile4k(dtype, aligned, log2bs)) {
        if (dtype == BNBD_F32) return quant_tile_blocks_per_sm_dt<Coder, BNBD_F32, true>();
        if (dtype == BNBD_BF16) return quant_tile_blocks_per_sm_dt<Coder, BNBD_BF16, true>();
        return quant_tile_blocks_per_sm_dt<Coder, BNBD_F16, true>();
    }
    if (dtype == BNBD_F32) return quant_tile_blocks_per_sm_dt<Coder, BNBD_F32, false>();
    if (dtype == BNBD_BF16) return quant_tile_blocks_per_sm_dt<Coder, BNBD_BF16, false>();
    return quant_tile_blocks_per_sm_dt<Coder, BNBD_F16, false>();
}

}  // namespace bnbd

#endif
