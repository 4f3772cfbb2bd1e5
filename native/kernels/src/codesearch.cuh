// Code search for the quantizers: the 8-bit nearest-midpoint search (plain and shared-memory bucket table)
// and the NF4/FP4 threshold codes (shared-memory bucket table). Every fast path here is exact: it returns
// the same index as the literal rule of the numerical contract for every f32 input (tests/selftest.cu checks
// that exhaustively over all 2^32 bit patterns).
//
// Bucket tables. A bucket is a set of consecutive f32 bit patterns sharing a sign, an exponent and the top K
// mantissa bits, i.e. an interval of the real line: [A, B) for positive numbers, (-B, -A] for negative ones
// (zeros included: +0 is in [0, .), -0 in (., 0]). The code is a monotone step function of xn, so inside a
// bucket it is determined by the breakpoints that fall in the bucket's interval. Each table entry stores the
// result below the (single) breakpoint and the breakpoint itself as a float m such that "xn > m" is exactly
// the test that moves the result up. Entries whose bucket has more than one breakpoint (8-bit only, possible
// for arbitrary code books) are marked "slow" and fall back to a binary search restricted to the bucket.
#ifndef BNBDIST_SRC_CODESEARCH_CUH
#define BNBDIST_SRC_CODESEARCH_CUH

#include "common.cuh"
#include "codebooks.cuh"

namespace bnbd {

__device__ __forceinline__ float bits_f(uint32_t u) { return __uint_as_float(u); }

// Next float toward -infinity of a non-NaN m > -inf (for "xn >= m" == "xn > prev(m)"; zeros: prev(+-0) = -denorm_min).
__device__ __forceinline__ float prev_float(float m) {
    uint32_t u = __float_as_uint(m);
    if ((u & 0x7FFFFFFFu) == 0) return __uint_as_float(0x80000001u);
    return __uint_as_float((u & 0x80000000u) ? u + 1u : u - 1u);
}

// =========================================================================================================
// 8-bit: idx = #{j : xn > mid[j]}, except on xn == mid[j] (lowest such j) idx = the even one of j, j+1;
// NaN -> 0. mid[j] = RN(RN(code[j] + code[j+1]) * 0.5), j = 0..254, non-decreasing for an ascending code.
// The optimizers' requantization (UP = true, src/optim8bit.cu) uses the other tie rule: idx = #{j : mid[j] <= xn}
// (an exact midpoint goes to the upper code), NaN -> 0. Every search below takes the rule as a template flag.

// mid[0..254] from code; mid[255] = +inf (never read by the searches below as a candidate).
__device__ __forceinline__ void q8_compute_mids(float* s_mid, const float* __restrict__ code) {
    for (int j = threadIdx.x; j < 256; j += blockDim.x) {
        float m;
        if (j < 255) m = __fmul_rn(__fadd_rn(__ldg(code + j), __ldg(code + j + 1)), 0.5f);
        else m = __uint_as_float(0x7F800000u);
        s_mid[j] = m;
    }
}

// #{j in [lo, hi) : mid[j] < v} + lo, i.e. the first j in [lo, hi) with !(mid[j] < v) (or hi).
__device__ __forceinline__ int q8_lower_bound(const float* s_mid, int lo, int hi, float v) {
    int count = hi - lo;
    while (count > 0) {
        int step = count >> 1;
        int it = lo + step;
        if (s_mid[it] < v) {
            lo = it + 1;
            count -= step + 1;
        } else {
            count = step;
        }
    }
    return lo;
}

// first j in [0, 255) with mid[j] > v (or 255) == #{j : mid[j] <= v}
__device__ __forceinline__ int q8_count_le(const float* s_mid, float v) {
    int lo = 0, count = 255;
    while (count > 0) {
        int step = count >> 1;
        int it = lo + step;
        if (!(s_mid[it] > v)) {
            lo = it + 1;
            count -= step + 1;
        } else {
            count = step;
        }
    }
    return lo;
}

// first j in [lo, hi) with mid[j] > v (or hi) == lo + #{j in [lo, hi) : mid[j] <= v}
__device__ __forceinline__ int q8_upper_bound(const float* s_mid, int lo, int hi, float v) {
    int count = hi - lo;
    while (count > 0) {
        int step = count >> 1;
        int it = lo + step;
        if (!(s_mid[it] > v)) {
            lo = it + 1;
            count -= step + 1;
        } else {
            count = step;
        }
    }
    return lo;
}

// Exact search restricted to the candidate range [lo, hi): every mid below lo is < xn, every mid from hi on
// is > xn, and any mid equal to xn lies in [lo, hi). With lo = 0, hi = 255 this is the plain full search.
template <bool UP = false>
__device__ __forceinline__ int q8_search_range(const float* s_mid, int lo, int hi, float xn) {
    if (UP) return q8_upper_bound(s_mid, lo, hi, xn);
    int c = q8_lower_bound(s_mid, lo, hi, xn);
    if (c < hi && s_mid[c] == xn) c += c & 1;  // exact midpoint (the lowest one): the even of c, c+1
    return c;
}

// Plain search with ties up, branch-free: #{j < 255 : mid[j] <= xn} in 8 halving steps (NaN compares false: 0).
__device__ __forceinline__ int q8_search_plain_up(const float* s_mid, float xn) {
    int c = 0;
#pragma unroll
    for (int s = 128; s >= 1; s >>= 1)
        if (s_mid[c + s - 1] <= xn) c += s;  // max index read: 254
    return c;
}

// Plain search over all 255 midpoints, branch-free: 8 halving steps, then the tie test. NaN -> 0.
__device__ __forceinline__ int q8_search_plain(const float* s_mid, float xn) {
    int c = 0;
#pragma unroll
    for (int s = 128; s >= 1; s >>= 1)
        if (s_mid[c + s - 1] < xn) c += s;  // max index read: 254
    // c = #{j < 255 : mid[j] < xn}
    if (c < 255 && s_mid[c] == xn) c += c & 1;
    return c;
}

// Bucket table for the 8-bit search: K8 mantissa bits, exponents [Q8_EMIN, 127] (|x| in [2^-23, 2)),
// plus a "tiny" bucket (|x| < 2^-23, zeros and denormals) and a "huge" bucket (|x| >= 2, inf, NaN) per sign.
constexpr int Q8_K = 6;
constexpr int Q8_EMIN = 104;
constexpr int Q8_NQ = ((128 - Q8_EMIN) << Q8_K) + 2;  // buckets per sign: 1538
constexpr int Q8_TABLE = 2 * Q8_NQ;                   // 3076 entries of 8 bytes

// Entry: .x = breakpoint m (float; NaN when the bucket holds no midpoint), .y = meta (int bits).
//   meta >= 0: fast entry, meta = lo (0..255): idx = lo + (xn > m).
//   meta <  0: slow entry, lo = meta & 0xFF, hi = (meta >> 8) & 0x1FF: idx = q8_search_range(lo, hi).
__device__ __forceinline__ int q8_bucket(float xn) {
    // |xn| clamped to [prev(2^(Q8_EMIN-127)), 2]: the clamp ends fall in the tiny (q = 0) and huge (q = NQ-1)
    // buckets, and every value between them keeps its own bucket; NaN becomes the tiny bucket (the callers
    // handle NaN separately).
    const float lo_clamp = __uint_as_float((uint32_t(Q8_EMIN) << 23) - 1u);
    const float a = fminf(fmaxf(fabsf(xn), lo_clamp), 2.0f);
    const int q = int(__float_as_uint(a) >> (23 - Q8_K)) - ((Q8_EMIN << Q8_K) - 1);
    return q + int(__float_as_uint(xn) >> 31) * Q8_NQ;
}

// Lower end A_q of the magnitude interval [A_q, A_{q+1}) of bucket q (A_0 = 0, A_{NQ-1} = 2).
__device__ __forceinline__ float q8_bucket_start(int q) {
    if (q == 0) return 0.0f;
    return bits_f(((uint32_t(Q8_EMIN) << Q8_K) + uint32_t(q) - 1u) << (23 - Q8_K));
}

template <bool UP = false>
__device__ __forceinline__ void q8_write_entry(float2* s_tab, const float* s_mid, int e, int lo, int hi) {
    float2 ent;
    const int cnt = hi - lo;
    if (cnt <= 0) {
        ent.x = __uint_as_float(0x7FFFFFFFu);  // NaN: "xn > m" is always false
        ent.y = __int_as_float(lo);
    } else {
        const float m = s_mid[lo];
        // odd lo (or ties up): a tie at j = lo goes up to lo + 1, so the test becomes xn >= m, i.e. xn > prev(m)
        const bool up = UP || (lo & 1) != 0;
        const bool ok = cnt == 1 && !(up && __float_as_uint(m) == 0xFF800000u) && !(m != m);
        if (ok) {
            ent.x = up ? prev_float(m) : m;
            ent.y = __int_as_float(lo);
        } else {
            ent.x = 0.0f;
            ent.y = __int_as_float(int(0x80000000u | (uint32_t(hi) << 8) | uint32_t(lo)));
        }
    }
    s_tab[e] = ent;
}

// Build the table (all threads of the block; s_mid must be complete and visible; caller syncs after).
// Positive bucket q = [A_q, A_{q+1}): lo = #{mid < A_q}, hi = #{mid < A_{q+1}} (huge: #{mid <= inf}).
// Negative bucket q = (-A_{q+1}, -A_q]: lo = #{mid <= -A_{q+1}} (huge: #{mid < -inf}), hi = #{mid <= -A_q}.
// Half of the threads build each sign; a thread takes a run of consecutive buckets: one binary search for
// the first boundary, then a walk over the sorted midpoints.
template <bool UP = false>
__device__ __forceinline__ void q8_build_table(float2* s_tab, const float* s_mid) {
    const float kInf = __uint_as_float(0x7F800000u);
    const int H = int(blockDim.x) >> 1;
    const bool neg = int(threadIdx.x) >= H;
    const int t = neg ? int(threadIdx.x) - H : int(threadIdx.x);
    const int per = (Q8_NQ + H - 1) / H;
    const int q0 = t * per;
    const int q1 = min(Q8_NQ, q0 + per);
    if (q0 >= q1) return;
    if (!neg) {
        int j = q8_lower_bound(s_mid, 0, 255, q8_bucket_start(q0));
        for (int q = q0; q < q1; ++q) {
            const int lo = j;
            int hi;
            if (q == Q8_NQ - 1) {
                hi = q8_count_le(s_mid, kInf);
            } else {
                const float B = q8_bucket_start(q + 1);
                while (j < 255 && s_mid[j] < B) ++j;
                hi = j;
            }
            q8_write_entry<UP>(s_tab, s_mid, q, lo, hi);
        }
    } else {
        int j = q8_count_le(s_mid, -q8_bucket_start(q0));
        for (int q = q0; q < q1; ++q) {
            const int hi = j;
            int lo;
            if (q == Q8_NQ - 1) {
                lo = q8_lower_bound(s_mid, 0, 255, -kInf);
            } else {
                const float v = -q8_bucket_start(q + 1);
                while (j > 0 && s_mid[j - 1] > v) --j;
                lo = j;
            }
            q8_write_entry<UP>(s_tab, s_mid, Q8_NQ + q, lo, hi);
        }
    }
}

// Exact for every xn (slow entries and NaN included).
template <bool UP = false>
__device__ __forceinline__ int q8_search_table(const float2* s_tab, const float* s_mid, float xn) {
    const float2 ent = s_tab[q8_bucket(xn)];
    const int meta = __float_as_int(ent.y);
    int c;
    if (meta >= 0) {
        c = meta + (xn > ent.x ? 1 : 0);
    } else {
        c = q8_search_range<UP>(s_mid, meta & 0xFF, (meta >> 8) & 0x1FF, xn);
    }
    return (xn != xn) ? 0 : c;  // NaN -> 0
}

// N elements at once, branch-free in the common case so that the N table loads are in flight together:
// if any element hits a slow entry or is NaN, the whole group is redone with the exact q8_search_table.
template <int N, bool UP = false>
__device__ __forceinline__ void q8_search_table_n(const float2* s_tab, const float* s_mid, const float* xn, int* c) {
    float2 ent[N];
#pragma unroll
    for (int j = 0; j < N; ++j) ent[j] = s_tab[q8_bucket(xn[j])];
    int flags = 0;
    bool nan = false;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        const int meta = __float_as_int(ent[j].y);
        c[j] = meta + (xn[j] > ent[j].x ? 1 : 0);
        flags |= meta;
        nan |= xn[j] != xn[j];
    }
    if (flags < 0 || nan) {
#pragma unroll
        for (int j = 0; j < N; ++j) c[j] = q8_search_table<UP>(s_tab, s_mid, xn[j]);
    }
}

// =========================================================================================================
// 4-bit: tables indexed directly by the top (9 + Q4_K) bits of the float (sign, exponent, Q4_K mantissa bits).
// NF4: signed table over xn. FP4: magnitude table over |xn| plus the sign bit (8 when xn < 0).
// Entry: .x = breakpoint m, .y = lo | hi << 8: code = (xn > m) ? hi : lo. With Q4_K = 2 every bucket holds at
// most one NF4/FP4 threshold (checked by the exhaustive test). NaN buckets: the bucket starting at +inf holds
// +inf and NaNs: m = FLT_MAX separates them (NaN compares false -> lo = the NaN code 0).
constexpr int Q4_K = 2;
constexpr int NF4_TABLE = 1 << (9 + Q4_K);  // 2048
constexpr int FP4_TABLE = 1 << (8 + Q4_K);  // 1024

__device__ __forceinline__ int nf4_direct(float xn) {
    int c = 0;
#pragma unroll
    for (int i = 0; i < 15; ++i) c += (xn > bnbd_nf4_thresholds[i]) ? 1 : 0;
    return c;
}

// FP4 code of |a| (a >= 0 or NaN), without the sign bit. Thresholds and order as in the contract.
__device__ __forceinline__ int fp4_mag_direct(float a) {
    int c;
    if (a > bnbd_fp4_thresholds[6]) c = 3;        // > 0.8333333
    else if (a > bnbd_fp4_thresholds[5]) c = 2;   // > 0.583333
    else if (a > bnbd_fp4_thresholds[4]) c = 5;   // > 0.4166667
    else if (a > bnbd_fp4_thresholds[3]) c = 4;   // > 0.29166667
    else if (a > bnbd_fp4_thresholds[2]) c = 7;   // > 0.20833333
    else if (a > bnbd_fp4_thresholds[1]) c = 6;   // > 0.0859375
    else if (a > bnbd_fp4_thresholds[0]) c = 1;   // > 0.00260417
    else c = 0;
    return c;
}

__device__ __forceinline__ int fp4_direct(float xn) { return fp4_mag_direct(fabsf(xn)) | (xn < 0.0f ? 8 : 0); }

// The code functions the 4-bit tables are built from: code = map(rank), rank(x) = #{i : x > T[i]} over the
// sorted thresholds T (NaN: rank 0).
struct NF4Fn {
    static constexpr int NTHR = 15;
    __device__ __forceinline__ static float thr(int i) { return bnbd_nf4_thresholds[i]; }
    __device__ __forceinline__ static int map(int rank) { return rank; }
};
struct FP4MagFn {
    static constexpr int NTHR = 7;
    __device__ __forceinline__ static float thr(int i) { return bnbd_fp4_thresholds[i]; }
    __device__ __forceinline__ static int map(int rank) {  // magnitude rank -> FP4 bits: 0,1,6,7,4,5,2,3
        return int((0x32547610u >> (4 * rank)) & 0xFu);
    }
};

// rank(x) by binary search over s_thr[0..15] (padded with +inf beyond NTHR).
__device__ __forceinline__ int q4_rank(const float* s_thr, float x) {
    int c = 0;
#pragma unroll
    for (int step = 8; step >= 1; step >>= 1)
        if (x > s_thr[c + step - 1]) c += step;
    return c;
}

// Build a 4-bit table (all threads of the block; caller syncs after). The code is monotone in rank and rank is
// monotone over each bucket (NF4 over xn, the FP4 magnitude code over |xn|), so equal ranks at the bucket's two
// ends mean a constant bucket; otherwise the bucket holds exactly one threshold T = T[rank(xlo)]
// (xlo <= T < xhi; checked exhaustively by the self-test) and code = (xn > T) ? map(rank + 1) : map(rank).
template <int TABLE, typename Fn>
__device__ __forceinline__ void q4_build_table(float2* s_tab) {
    __shared__ float s_thr[16];
    if (threadIdx.x < 16) s_thr[threadIdx.x] = int(threadIdx.x) < Fn::NTHR ? Fn::thr(threadIdx.x)
                                                                             : __uint_as_float(0x7F800000u);
    __syncthreads();
    for (int e = threadIdx.x; e < TABLE; e += blockDim.x) {
        const uint32_t lo_bits = uint32_t(e) << (23 - Q4_K);
        const uint32_t hi_bits = lo_bits | ((1u << (23 - Q4_K)) - 1u);
        float2 ent;
        if (((lo_bits >> 23) & 0xFFu) == 0xFFu) {
            // +inf / -inf / NaN buckets: NaN -> map(0) (all comparisons false)
            const int fn = Fn::map(0);
            if (lo_bits == 0x7F800000u) {  // +inf and NaNs: m = FLT_MAX, inf > m, NaN not
                ent.x = __uint_as_float(0x7F7FFFFFu);
                ent.y = __int_as_float(fn | (Fn::map(Fn::NTHR) << 8));
            } else {  // -inf and NaNs (NF4: rank(-inf) == rank(NaN) == 0; the FP4 table has no negatives), or NaNs
                ent.x = __uint_as_float(0x7FFFFFFFu);
                ent.y = __int_as_float(fn | (fn << 8));
            }
        } else {
            const bool neg = (lo_bits >> 31) != 0;
            const float xlo = neg ? bits_f(hi_bits) : bits_f(lo_bits);  // smallest value of the bucket
            const float xhi = neg ? bits_f(lo_bits) : bits_f(hi_bits);  // largest value of the bucket
            const int rlo = q4_rank(s_thr, xlo), rhi = q4_rank(s_thr, xhi);
            if (rlo == rhi) {
                ent.x = __uint_as_float(0x7FFFFFFFu);  // NaN: never taken
                ent.y = __int_as_float(Fn::map(rlo) | (Fn::map(rlo) << 8));
            } else {
                ent.x = s_thr[rlo];
                ent.y = __int_as_float(Fn::map(rlo) | (Fn::map(rhi) << 8));
            }
        }
        s_tab[e] = ent;
    }
}

__device__ __forceinline__ void nf4_build_table(float2* s_tab) { q4_build_table<NF4_TABLE, NF4Fn>(s_tab); }
__device__ __forceinline__ void fp4_build_table(float2* s_tab) { q4_build_table<FP4_TABLE, FP4MagFn>(s_tab); }

__device__ __forceinline__ int q4_decode(float2 ent, float xn) {
    // byte 1 (hi) or byte 0 (lo) of ent.y, zero-extended
    return int(__byte_perm(__float_as_uint(ent.y), 0u, (xn > ent.x) ? 0x4441u : 0x4440u));
}

__device__ __forceinline__ int nf4_table(const float2* s_tab, float xn) {
    return q4_decode(s_tab[__float_as_uint(xn) >> (23 - Q4_K)], xn);
}

__device__ __forceinline__ int fp4_table(const float2* s_tab, float xn) {
    const uint32_t u = __float_as_uint(xn);
    const uint32_t a = u & 0x7FFFFFFFu;
    const int c = q4_decode(s_tab[a >> (23 - Q4_K)], __uint_as_float(a));
    return c | (xn < 0.0f ? 8 : 0);
}

}  // namespace bnbd

#endif
