// Deterministic mean (bnbd_mean_f32), in the exact order of the contract:
//   P_c = f64 tree sum of chunk c (1024 values, zero-padded; s[i] += s[i + stride], stride = 512 .. 1),
//   S = P_0 + P_1 + ... sequentially in f64, mean = f32(S) * RN(1.0f / f32(n)), every step f32 RN.
// One kernel launch (the launch latency is most of the cost for the usual sizes, e.g. the 2^20 absmax of an
// 8192^2 matrix):
// - Chunk sums: one warp per chunk (grid-stride over chunks). Lane l holds v[m] = x[1024c + l + 32m], m = 0..31
//   (32 coalesced loads in flight); strides 512..32 pair v[m] with v[m + stride/32] inside the lane, strides
//   16..1 are __shfl_down between lanes, i.e. exactly s[i] += s[i + stride] for i < stride. P_c -> workspace.
// - Last block done: each CTA publishes its chunk sums (barrier, then __threadfence by thread 0) and counts
//   itself in a completion word in the workspace; the CTA that completes the count combines all P_c
//   (mean_combine). When the P_c are such that every partial sum is exact (the usual case, e.g. for absmax
//   values), their sum is order-independent and is reduced in parallel; otherwise 256 threads stage the P_c in
//   shared memory (double-buffered) and thread 0 adds them in order.
// The workspace is caller-owned and uninitialized, and nothing initializes it in the stream: the completion
// word holds (call tag << 16) | count, where the 48-bit tag is new for every call of this process (a
// process-random start, then a counter, through a bijection of 48-bit integers; never 0). A CTA that finds a
// foreign tag there installs its own with count 0 (atomicCAS); then every CTA adds 1 (atomicAdd, no retry
// loop: a CAS loop over all CTAs collapsed under contention, 4x slower at n = 2^20). A stale word left by an
// earlier call (of this process, e.g. the same caching-allocator block again) never carries the current tag;
// only foreign data whose high 48 bits happen to equal this call's tag could mislead it (odds 2^-48 per call
// for data unrelated to the tag sequence). The chunk sums need no initialization: every P_c is written before
// it is read.
#include <atomic>
#include <chrono>

#include "common.cuh"

namespace bnbd {
namespace {

constexpr int MEAN_CHUNK = 1024;
constexpr int MEAN_THREADS = 256;
constexpr int MEAN_BATCH = 2048;  // doubles per shared-memory buffer of the sequential path
constexpr int MEAN_COUNT_BITS = 16;
constexpr int64_t MEAN_MAX_GRID = (int64_t(1) << MEAN_COUNT_BITS) - 1;
constexpr uint64_t MEAN_TAG_MASK = (uint64_t(1) << (64 - MEAN_COUNT_BITS)) - 1;

// Exponent of the lowest set bit of a finite nonzero double (v = odd * 2^result).
__device__ __forceinline__ int lowest_bit_exp(double v) {
    const unsigned long long b = (unsigned long long)__double_as_longlong(v);
    const int E = int((b >> 52) & 0x7FF);
    unsigned long long m = b & ((1ull << 52) - 1);
    if (E != 0) m |= 1ull << 52;
    return (E != 0 ? E : 1) - 1075 + (__ffsll((long long)m) - 1);
}

// The combination, by the CTA that completed the count (all MEAN_THREADS threads). The chunk sums were written
// by other CTAs of this grid: they are read from L2 (ld.global.cg), after the acquiring fence.
__device__ __forceinline__ void mean_combine(const double* __restrict__ partial, int64_t nchunks, int64_t n,
                                             float* __restrict__ out) {
    __shared__ double buf[2][MEAN_BATCH];
    __shared__ double s_sum[MEAN_THREADS / 32], s_abs[MEAN_THREADS / 32];
    __shared__ int s_q[MEAN_THREADS / 32], s_bad[MEAN_THREADS / 32];

    // Fast path, exact: let 2^q be the smallest quantum (lowest set bit) of the P_c and T = sum |P_c|. If
    // T < 2^(53+q), every partial sum, in any order, is a multiple of 2^q below 2^(53+q) in magnitude, hence
    // exactly representable: all additions are exact and any order gives the sequential result. T is computed
    // in f64 (relative error < 2^-42 for any n here), so 2^(52+q) with a margin is tested.
    {
        double sum = 0.0, abs_sum = 0.0;
        int q = 0x7FFFFFFF, bad = 0;
        for (int64_t i = threadIdx.x; i < nchunks; i += MEAN_THREADS) {
            const double p = __ldcg(partial + i);
            if (!isfinite(p)) bad = 1;
            else if (p != 0.0) q = min(q, lowest_bit_exp(p));
            sum = __dadd_rn(sum, p);
            abs_sum = __dadd_rn(abs_sum, fabs(p));
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            sum = __dadd_rn(sum, __shfl_xor_sync(0xFFFFFFFFu, sum, o));
            abs_sum = __dadd_rn(abs_sum, __shfl_xor_sync(0xFFFFFFFFu, abs_sum, o));
            q = min(q, __shfl_xor_sync(0xFFFFFFFFu, q, o));
            bad |= __shfl_xor_sync(0xFFFFFFFFu, bad, o);
        }
        if ((threadIdx.x & 31) == 0) {
            s_sum[threadIdx.x >> 5] = sum;
            s_abs[threadIdx.x >> 5] = abs_sum;
            s_q[threadIdx.x >> 5] = q;
            s_bad[threadIdx.x >> 5] = bad;
        }
        __syncthreads();
        sum = s_sum[0];
        abs_sum = s_abs[0];
        q = s_q[0];
        bad = s_bad[0];
#pragma unroll
        for (int w = 1; w < MEAN_THREADS / 32; ++w) {
            sum = __dadd_rn(sum, s_sum[w]);
            abs_sum = __dadd_rn(abs_sum, s_abs[w]);
            q = min(q, s_q[w]);
            bad |= s_bad[w];
        }
        bool exact = !bad && abs_sum == 0.0;
        if (!bad && abs_sum != 0.0 && q < 1000) {
            const double bound = ldexp(1.0, 52 + q);
            exact = __dmul_rn(abs_sum, 1.0 + 0x1p-30) < bound;
        }
        if (exact) {  // uniform
            if (threadIdx.x == 0) {
                const float factor = __fdiv_rn(1.0f, __ll2float_rn((long long)n));
                out[0] = __fmul_rn(__double2float_rn(sum), factor);
            }
            return;
        }
    }

    // General path: the sequential sum.
    double S = 0.0;  // meaningful in thread 0 only
    const int64_t nbatches = (nchunks + MEAN_BATCH - 1) / MEAN_BATCH;
    // stage batch 0
    for (int i = threadIdx.x; i < MEAN_BATCH; i += MEAN_THREADS)
        if (i < nchunks) buf[0][i] = __ldcg(partial + i);
    __syncthreads();
    for (int64_t b = 0; b < nbatches; ++b) {
        const int cur = int(b & 1);
        const int64_t start = b * MEAN_BATCH;
        const int cnt = int((nchunks - start) < MEAN_BATCH ? (nchunks - start) : MEAN_BATCH);
        if (threadIdx.x == 0) {
            // the adds stay strictly in order; the shared-memory loads run one group of 8 ahead of them
            const double* p = buf[cur];
            int i = 0;
            if (cnt >= 8) {
                double a[8];
#pragma unroll
                for (int k = 0; k < 8; ++k) a[k] = p[k];
                for (; i + 16 <= cnt; i += 8) {
                    double nx[8];
#pragma unroll
                    for (int k = 0; k < 8; ++k) nx[k] = p[i + 8 + k];
#pragma unroll
                    for (int k = 0; k < 8; ++k) S = __dadd_rn(S, a[k]);
#pragma unroll
                    for (int k = 0; k < 8; ++k) a[k] = nx[k];
                }
#pragma unroll
                for (int k = 0; k < 8; ++k) S = __dadd_rn(S, a[k]);
                i += 8;
            }
            for (; i < cnt; ++i) S = __dadd_rn(S, p[i]);
        } else if (b + 1 < nbatches) {
            // the other threads stage the next batch meanwhile
            const int64_t nstart = start + MEAN_BATCH;
            for (int i = threadIdx.x - 1; i < MEAN_BATCH; i += MEAN_THREADS - 1)
                if (nstart + i < nchunks) buf[cur ^ 1][i] = __ldcg(partial + nstart + i);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        // mean = f32(S) * RN(1 / f32(n)), all f32 RN (torch's mean scales by an f32 1/n factor)
        const float factor = __fdiv_rn(1.0f, __ll2float_rn((long long)n));
        out[0] = __fmul_rn(__double2float_rn(S), factor);
    }
}

__global__ void __launch_bounds__(MEAN_THREADS)
    mean_kernel(const float* __restrict__ x, int64_t n, int64_t nchunks, unsigned long long* __restrict__ done,
                double* __restrict__ partial, unsigned long long tag, float* __restrict__ out) {
    __shared__ int s_last;
    pdl_trigger();  // the next kernel may launch (and prepare) now; it waits for this grid before reading `out`
    pdl_wait();     // the previous kernel (e.g. the 4-bit quantizer writing x) has completed
    const int lane = threadIdx.x & 31;
    const int64_t warps_total = int64_t(gridDim.x) * (MEAN_THREADS / 32);
    for (int64_t c = int64_t(blockIdx.x) * (MEAN_THREADS / 32) + (threadIdx.x >> 5); c < nchunks; c += warps_total) {
        const int64_t base = c * MEAN_CHUNK + lane;
        double v[32];
        if (c * MEAN_CHUNK + MEAN_CHUNK <= n) {
#pragma unroll
            for (int m = 0; m < 32; ++m) v[m] = double(__ldg(x + base + 32 * m));
        } else {
#pragma unroll
            for (int m = 0; m < 32; ++m) {
                const int64_t k = base + 32 * m;
                v[m] = k < n ? double(__ldg(x + k)) : 0.0;
            }
        }
        // strides 512, 256, 128, 64, 32: element i = l + 32m pairs with i + stride = l + 32(m + stride/32)
        // (constant trip counts: v[] stays in registers)
#pragma unroll
        for (int m = 0; m < 16; ++m) v[m] = __dadd_rn(v[m], v[m + 16]);
#pragma unroll
        for (int m = 0; m < 8; ++m) v[m] = __dadd_rn(v[m], v[m + 8]);
#pragma unroll
        for (int m = 0; m < 4; ++m) v[m] = __dadd_rn(v[m], v[m + 4]);
#pragma unroll
        for (int m = 0; m < 2; ++m) v[m] = __dadd_rn(v[m], v[m + 2]);
        v[0] = __dadd_rn(v[0], v[1]);
        // strides 16 .. 1 across lanes: lane i < stride adds lane i + stride
        double s = v[0];
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) {
            const double other = __shfl_down_sync(0xFFFFFFFFu, s, o);
            s = __dadd_rn(s, other);
        }
        if (lane == 0) partial[c] = s;
    }

    // Last block done (the pattern of cooperative groups' grid barrier): the barrier collects the CTA's chunk
    // sums, thread 0's fence (cumulative) orders them before its count in the completion word.
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned long long mine = tag << MEAN_COUNT_BITS;
        const unsigned long long count_mask = (1ull << MEAN_COUNT_BITS) - 1;
        // install this call's tag with count 0 over a foreign word (garbage, or an earlier call's word); a word
        // with this call's tag only ever gets incremented, so one CAS per foreign value seen is enough
        unsigned long long cur = *reinterpret_cast<volatile unsigned long long*>(done);
        while ((cur & ~count_mask) != mine) {
            const unsigned long long seen = atomicCAS(done, cur, mine);
            cur = seen == cur ? mine : seen;
        }
        const unsigned long long before = atomicAdd(done, 1ull);  // no retry loop: no contention collapse
        s_last = (before & count_mask) + 1 == (unsigned long long)gridDim.x;
        __threadfence();  // acquire side: the chunk sums of the CTAs counted before are visible now
    }
    __syncthreads();
    if (!s_last) return;  // uniform per CTA
    mean_combine(partial, nchunks, n, out);
}

__global__ void mean_zero_kernel(float* out) { out[0] = 0.0f; }

// Tag of one call: a 48-bit value, distinct for 2^48 calls of this process, never 0.
unsigned long long next_mean_tag() {
    static std::atomic<uint64_t> calls{0};
    static const uint64_t start = [] {
        uint64_t z = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                     (uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) << 17) ^
                     uint64_t(reinterpret_cast<uintptr_t>(&calls));
        // splitmix64 finalizer
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }();
    for (;;) {
        uint64_t t = (start + calls.fetch_add(1, std::memory_order_relaxed)) & MEAN_TAG_MASK;
        // a bijection of 48-bit integers: odd multipliers and xor-shifts, all mod 2^48
        t = (t * 0x9E3779B97F4Bull) & MEAN_TAG_MASK;
        t ^= t >> 23;
        t = (t * 0xD6E8FEB86659ull) & MEAN_TAG_MASK;
        t ^= t >> 21;
        if (t != 0 && t != MEAN_TAG_MASK) return (unsigned long long)t;
    }
}

}  // namespace
}  // namespace bnbd

using namespace bnbd;

extern "C" BNBD_API int64_t bnbd_mean_workspace_bytes(int64_t n) {
    if (n <= 0) return 0;
    // the completion word, then one f64 chunk sum per chunk
    return int64_t(sizeof(unsigned long long)) + ((n + MEAN_CHUNK - 1) / MEAN_CHUNK) * int64_t(sizeof(double));
}

extern "C" BNBD_API int bnbd_mean_f32(const float* x, int64_t n, float* out, void* workspace, void* stream) {
    BNBD_REQUIRE(n >= 0);
    BNBD_REQUIRE(out);
    const cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (n == 0) {
        mean_zero_kernel<<<1, 1, 0, st>>>(out);
        BNBD_CHECK_LAUNCH();
        return 0;
    }
    BNBD_REQUIRE(x && workspace && aligned_to(workspace, 8));
    const int64_t nchunks = (n + MEAN_CHUNK - 1) / MEAN_CHUNK;
    int sms = 0;
    BNBD_RETURN_IF_ERROR(cudaError_t(sm_count(&sms)));
    const int64_t warps_per_block = MEAN_THREADS / 32;
    int64_t grid = (nchunks + warps_per_block - 1) / warps_per_block;
    int64_t cap = int64_t(sms) * 16;
    if (cap > MEAN_MAX_GRID) cap = MEAN_MAX_GRID;
    if (grid > cap) grid = cap;
    unsigned long long* done = static_cast<unsigned long long*>(workspace);
    double* partial = static_cast<double*>(workspace) + 1;
    // programmatic dependent launch: the kernel waits (griddepcontrol.wait) before it reads x; the next kernel
    // may launch early and waits for this one before it reads `out`
    BNBD_RETURN_IF_ERROR(launch_pdl(mean_kernel, dim3((unsigned)grid), dim3(MEAN_THREADS), st, x, n, nchunks, done,
                                    partial, next_mean_tag(), out));
    BNBD_CHECK_LAUNCH();
    return 0;
}
