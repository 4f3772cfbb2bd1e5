// LLM.int8 row-wise quantization (bnbd_int8_vectorwise_quant).
// One CTA (256 threads) per row (grid-stride over rows). Pass 1: max |x| over the row (ignoring NaN and,
// with threshold > 0, elements with |x| >= threshold), reduced with warp shuffles + one shared-memory step.
// Pass 2: scale = 127 / absmax (IEEE division), q = round-half-even(RN(x * scale)) saturated to [-127, 127]
// (cvt.rni.s32.f32: NaN -> 0, +-inf -> INT_MAX/INT_MIN before the clamp), outliers -> 0.
// Rows of up to 256 * NV 16-byte vectors stay in registers between the passes (NV = 1, 2, 4, 8: up to 16384
// bf16/f16 or 8192 f32 columns); longer rows, and rows that are not 16-byte aligned, re-read the row
// (from L1/L2) in pass 2.
#include "common.cuh"

namespace bnbd {
namespace {

constexpr int I8_THREADS = 256;

__device__ __forceinline__ float block_max_256(float v, float* s_warp) {
    v = warp_max_all(v);
    if ((threadIdx.x & 31) == 0) s_warp[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = s_warp[0];
#pragma unroll
    for (int w = 1; w < I8_THREADS / 32; ++w) m = fmaxf(m, s_warp[w]);
    return m;
}

__device__ __forceinline__ int8_t quant_i8(float x, float scale, bool thr_on, float threshold) {
    int q = __float2int_rn(__fmul_rn(x, scale));
    q = min(max(q, -127), 127);
    if (thr_on && fabsf(x) >= threshold) q = 0;
    return int8_t(q);
}

__device__ __forceinline__ float masked_abs(float x, bool thr_on, float threshold) {
    const float a = fabsf(x);
    return (thr_on && !(a < threshold)) ? 0.0f : a;  // NaN stays NaN and is ignored by fmaxf
}

// NV > 0: row in registers (requires aligned rows: 16-byte aligned row starts, cols % VEC == 0).
// NV == 0: generic strided loops, any alignment, any length.
template <int DT, int NV>
__global__ void __launch_bounds__(I8_THREADS)
    int8_rows_kernel(const void* __restrict__ Av, int8_t* __restrict__ out, float* __restrict__ row_stats,
                     int64_t rows, int64_t cols, float threshold) {
    using Tr = DType<DT>;
    using T = typename Tr::T;
    constexpr int VEC = Tr::VEC;
    __shared__ float s_warp[2][I8_THREADS / 32];
    const T* __restrict__ A = static_cast<const T*>(Av);
    const bool thr_on = threshold > 0.0f;
    const int tid = threadIdx.x;
    int parity = 0;

    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x, parity ^= 1) {
        const T* __restrict__ row = A + r * cols;
        int8_t* __restrict__ orow = out + r * cols;
        if constexpr (NV > 0) {
            float x[NV][VEC];
            float m = 0.0f;
#pragma unroll
            for (int i = 0; i < NV; ++i) {
                const int64_t c0 = int64_t(i * I8_THREADS + tid) * VEC;
                if (c0 < cols) {  // cols % VEC == 0: whole vectors
                    Tr::unpack(__ldg(reinterpret_cast<const uint4*>(row + c0)), x[i]);
                } else {
#pragma unroll
                    for (int j = 0; j < VEC; ++j) x[i][j] = 0.0f;
                }
#pragma unroll
                for (int j = 0; j < VEC; ++j) m = fmaxf(m, masked_abs(x[i][j], thr_on, threshold));
            }
            m = block_max_256(m, s_warp[parity]);
            if (tid == 0) row_stats[r] = m;
            const float scale = __fdiv_rn(127.0f, m);
#pragma unroll
            for (int i = 0; i < NV; ++i) {
                const int64_t c0 = int64_t(i * I8_THREADS + tid) * VEC;
                if (c0 < cols) {
                    int8_t q[VEC];
#pragma unroll
                    for (int j = 0; j < VEC; ++j) q[j] = quant_i8(x[i][j], scale, thr_on, threshold);
                    if constexpr (VEC == 4) {
                        *reinterpret_cast<uint32_t*>(orow + c0) =
                            uint32_t(uint8_t(q[0])) | (uint32_t(uint8_t(q[1])) << 8) |
                            (uint32_t(uint8_t(q[2])) << 16) | (uint32_t(uint8_t(q[3])) << 24);
                    } else {
                        uint2 w;
                        w.x = uint32_t(uint8_t(q[0])) | (uint32_t(uint8_t(q[1])) << 8) |
                              (uint32_t(uint8_t(q[2])) << 16) | (uint32_t(uint8_t(q[3])) << 24);
                        w.y = uint32_t(uint8_t(q[4])) | (uint32_t(uint8_t(q[5])) << 8) |
                              (uint32_t(uint8_t(q[6])) << 16) | (uint32_t(uint8_t(q[7])) << 24);
                        *reinterpret_cast<uint2*>(orow + c0) = w;
                    }
                }
            }
        } else {
            float m = 0.0f;
            for (int64_t c = tid; c < cols; c += I8_THREADS)
                m = fmaxf(m, masked_abs(Tr::load(row, c), thr_on, threshold));
            m = block_max_256(m, s_warp[parity]);
            if (tid == 0) row_stats[r] = m;
            const float scale = __fdiv_rn(127.0f, m);
            for (int64_t c = tid; c < cols; c += I8_THREADS)
                orow[c] = quant_i8(Tr::load(row, c), scale, thr_on, threshold);
        }
    }
}

template <int DT>
int launch_int8(bool aligned, const void* A, int8_t* out, float* row_stats, int64_t rows, int64_t cols,
                float threshold, cudaStream_t stream) {
    constexpr int VEC = DType<DT>::VEC;
    const int64_t nvec = (cols + VEC - 1) / VEC;
    const int64_t per_thread = (nvec + I8_THREADS - 1) / I8_THREADS;
    const int64_t grid = rows < 2147483647LL ? rows : 2147483647LL;
    const dim3 g((unsigned)grid), b(I8_THREADS);
    if (aligned && per_thread <= 1)
        int8_rows_kernel<DT, 1><<<g, b, 0, stream>>>(A, out, row_stats, rows, cols, threshold);
    else if (aligned && per_thread <= 2)
        int8_rows_kernel<DT, 2><<<g, b, 0, stream>>>(A, out, row_stats, rows, cols, threshold);
    else if (aligned && per_thread <= 4)
        int8_rows_kernel<DT, 4><<<g, b, 0, stream>>>(A, out, row_stats, rows, cols, threshold);
    else if (aligned && per_thread <= 8)
        int8_rows_kernel<DT, 8><<<g, b, 0, stream>>>(A, out, row_stats, rows, cols, threshold);
    else
        int8_rows_kernel<DT, 0><<<g, b, 0, stream>>>(A, out, row_stats, rows, cols, threshold);
    BNBD_CHECK_LAUNCH();
    return 0;
}

}  // namespace
}  // namespace bnbd

using namespace bnbd;

extern "C" BNBD_API int bnbd_int8_vectorwise_quant(int dtype, const void* A, int8_t* out, float* row_stats,
                                                   int64_t rows, int64_t cols, float threshold, void* stream) {
    BNBD_REQUIRE(valid_dtype(dtype));
    BNBD_REQUIRE(rows >= 0 && cols >= 0);
    if (rows == 0) return 0;
    BNBD_REQUIRE(row_stats);
    const cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (cols == 0) {  // empty rows: absmax 0
        BNBD_RETURN_IF_ERROR(cudaMemsetAsync(row_stats, 0, size_t(rows) * sizeof(float), st));
        return 0;
    }
    BNBD_REQUIRE(A && out);
    const int esz = dtype == BNBD_F32 ? 4 : 2;
    const int vec = 16 / esz;
    const bool aligned = aligned_to(A, 16) && (cols * esz) % 16 == 0 && aligned_to(out, uintptr_t(vec));
    switch (dtype) {
        case BNBD_F32: return launch_int8<BNBD_F32>(aligned, A, out, row_stats, rows, cols, threshold, st);
        case BNBD_BF16: return launch_int8<BNBD_BF16>(aligned, A, out, row_stats, rows, cols, threshold, st);
        default: return launch_int8<BNBD_F16>(aligned, A, out, row_stats, rows, cols, threshold, st);
    }
}
