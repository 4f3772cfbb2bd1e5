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
    const float off = has_off ? __ldg(sub_offset) : 0.0f;
    const int64_t nfull = n / QT_TILE;  // tiles [0, nfull) lie entirely inside [0, n)

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
        // launched with programmatic dependent launch: build the tables (from `code`, which the mean kernels
        // that trigger early never write) while the previous kernel finishes, then wait for it
        Coder::init(s_coder, code);
        pdl_wait();
        prefetch(t);
    } else {
        prefetch(t);  // in flight while the code tables are built
        Coder::init(s_coder, code);
    }
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
    if (dtype == BNBD_F32) {
        if (aligned) BNBD_QT_LAUNCH(BNBD_F32, true); else BNBD_QT_LAUNCH(BNBD_F32, false);
    } else if (dtype == BNBD_BF16) {
        if (aligned) BNBD_QT_LAUNCH(BNBD_BF16, true); else BNBD_QT_LAUNCH(BNBD_BF16, false);
    } else {
        if (aligned) BNBD_QT_LAUNCH(BNBD_F16, true); else BNBD_QT_LAUNCH(BNBD_F16, false);
    }
#undef BNBD_QT_LAUNCH
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
template <class Coder, int DT>
int quant_tile_blocks_per_sm_dt() {
    static const int cached = [] {
        int nb = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, quant_tile_kernel<Coder, DT, true>, QtCfg<DT>::THREADS,
                                                          0) != cudaSuccess ||
            nb < 1) {
            (void)cudaGetLastError();
            nb = 1;
        }
        return nb;
    }();
    return cached;
}

template <class Coder>
int quant_tile_blocks_per_sm(int dtype) {
    if (dtype == BNBD_F32) return quant_tile_blocks_per_sm_dt<Coder, BNBD_F32>();
    if (dtype == BNBD_BF16) return quant_tile_blocks_per_sm_dt<Coder, BNBD_BF16>();
    return quant_tile_blocks_per_sm_dt<Coder, BNBD_F16>();
}

}  // namespace bnbd

#endif
