// Deterministic mean (bnbd_mean_f32), in the exact order of the contract:
//   P_c = f64 tree sum of chunk c (1024 values, zero-padded; s[i] += s[i + stride], stride = 512 .. 1),
//   S = P_0 + P_1 + ... sequentially in f64, mean = f32(S) * RN(1.0f / f32(n)), every step f32 RN.
// Kernel 1: one warp per chunk (grid-stride over chunks). Lane l holds v[m] = x[1024c + l + 32m], m = 0..31
// (32 coalesced loads in flight); strides 512..32 pair v[m] with v[m + stride/32] inside the lane, strides
// 16..1 are __shfl_down between lanes, i.e. exactly s[i] += s[i + stride] for i < stride. P_c -> workspace.
// Kernel 2: one CTA. When the P_c are such that every partial sum is exact (see mean_final_kernel; the usual
// case, e.g. for absmax values), their sum is order-independent and is reduced in parallel; otherwise 256
// threads stage the P_c in shared memory (double-buffered) and thread 0 adds them in order.
// The workspace needs no initialization: kernel 1 writes every P_c before kernel 2 reads it.
#include "common.cuh"

namespace bnbd {
namespace {

constexpr int MEAN_CHUNK = 1024;
constexpr int MEAN1_THREADS = 256;
constexpr int MEAN2_THREADS = 256;
constexpr int MEAN2_BATCH = 2048;  // doubles per shared-memory buffer

__global__ void __launch_bounds__(MEAN1_THREADS)
    mean_chunks_kernel(const float* __restrict__ x, int64_t n, int64_t nchunks, double* __restrict__ partial) {
    pdl_trigger();  // mean_final_kernel may launch now; it waits for this grid to complete
    pdl_wait();     // the previous kernel (e.g. the 4-bit quantizer writing x) has completed
    const int lane = threadIdx.x & 31;
    const int64_t warps_total = int64_t(gridDim.x) * (MEAN1_THREADS / 32);
    for (int64_t c = int64_t(blockIdx.x) * (MEAN1_THREADS / 32) + (threadIdx.x >> 5); c < nchunks; c += warps_total) {
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
}

// Exponent of the lowest set bit of a finite nonzero double (v = odd * 2^result).
__device__ __forceinline__ int lowest_bit_exp(double v) {
    const unsigned long long b = (unsigned long long)__double_as_longlong(v);
    const int E = int((b >> 52) & 0x7FF);
    unsigned long long m = b & ((1ull << 52) - 1);
    if (E != 0) m |= 1ull << 52;
    return (E != 0 ? E : 1) - 1075 + (__ffsll((long long)m) - 1);
}

__global__ void __launch_bounds__(MEAN2_THREADS)
    mean_final_kernel(const double* __restrict__ partial, int64_t nchunks, int64_t n, float* __restrict__ out) {
    pdl_trigger();  // the next kernel may launch (and prepare) now; it waits for this grid before reading `out`
    pdl_wait();     // the chunk sums are complete
    __shared__ double buf[2][MEAN2_BATCH];
    __shared__ double s_sum[MEAN2_THREADS / 32], s_abs[MEAN2_THREADS / 32];
    __shared__ int s_q[MEAN2_THREADS / 32], s_bad[MEAN2_THREADS / 32];

    // Fast path, exact: let 2^q be the smallest quantum (lowest set bit) of the P_c and T = sum |P_c|. If
    // T < 2^(53+q), every partial sum, in any order, is a multiple of 2^q below 2^(53+q) in magnitude, hence
    // exactly representable: all additions are exact and any order gives the sequential result. T is computed
    // in f64 (relative error < 2^-42 for any n here), so 2^(52+q) with a margin is tested.
    {
        double sum = 0.0, abs_sum = 0.0;
        int q = 0x7FFFFFFF, bad = 0;
        for (int64_t i = threadIdx.x; i < nchunks; i += MEAN2_THREADS) {
            const double p = partial[i];
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
        for (int w = 1; w < MEAN2_THREADS / 32; ++w) {
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
    const int64_t nbatches = (nchunks + MEAN2_BATCH - 1) / MEAN2_BATCH;
    // stage batch 0
    for (int i = threadIdx.x; i < MEAN2_BATCH; i += MEAN2_THREADS)
        if (i < nchunks) buf[0][i] = partial[i];
    __syncthreads();
    for (int64_t b = 0; b < nbatches; ++b) {
        const int cur = int(b & 1);
        const int64_t start = b * MEAN2_BATCH;
        const int cnt = int((nchunks - start) < MEAN2_BATCH ? (nchunks - start) : MEAN2_BATCH);
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
            const int64_t nstart = start + MEAN2_BATCH;
            for (int i = threadIdx.x - 1; i < MEAN2_BATCH; i += MEAN2_THREADS - 1)
                if (nstart + i < nchunks) buf[cur ^ 1][i] = partial[nstart + i];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        // mean = f32(S) * RN(1 / f32(n)), all f32 RN (torch's mean scales by an f32 1/n factor)
        const float factor = __fdiv_rn(1.0f, __ll2float_rn((long long)n));
        out[0] = __fmul_rn(__double2float_rn(S), factor);
    }
}

__global__ void mean_zero_kernel(float* out) { out[0] = 0.0f; }

}  // namespace
}  // namespace bnbd

using namespace bnbd;

extern "C" BNBD_API int64_t bnbd_mean_workspace_bytes(int64_t n) {
    if (n <= 0) return 0;
    return ((n + MEAN_CHUNK - 1) / MEAN_CHUNK) * int64_t(sizeof(double));
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
    const int64_t warps_per_block = MEAN1_THREADS / 32;
    int64_t grid = (nchunks + warps_per_block - 1) / warps_per_block;
    const int64_t cap = int64_t(sms) * 16;
    if (grid > cap) grid = cap;
    double* partial = static_cast<double*>(workspace);
    // both launches allow programmatic dependent launch: each kernel waits (griddepcontrol.wait) before it
    // reads what the previous kernel of the stream produced
    BNBD_RETURN_IF_ERROR(launch_pdl(mean_chunks_kernel, dim3((unsigned)grid), dim3(MEAN1_THREADS), st, x, n, nchunks,
                                    partial));
    BNBD_CHECK_LAUNCH();
    BNBD_RETURN_IF_ERROR(launch_pdl(mean_final_kernel, dim3(1), dim3(MEAN2_THREADS), st,
                                    static_cast<const double*>(partial), nchunks, n, out));
    BNBD_CHECK_LAUNCH();
    return 0;
}
