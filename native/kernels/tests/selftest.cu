// bnbdist_kernels_selftest: every kernel against the host reference (tests/reference.h), bit for bit, on
// fresh random inputs with special values; exhaustive checks of the code-search fast paths; then timings.
// Exit code 0 only when every check passes. Last line: "selftest: N passed, M failed".
//
// Usage: bnbdist_kernels_selftest [--no-bench] [--bench-only] [--no-exhaustive] [--seed N]
//                                  [--bench-filter TEXT] [--bench-iters N] [--only GROUPS]
// GROUPS: api, search, blockwise, dequant8, 4bit, dequant4, gemv, mean, int8, pipeline, optim (comma-separated).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bnbdist_kernels.h"
#include "common.cuh"
#include "codesearch.cuh"
#include "reference.h"

using bnbref::bits_to_float;
using bnbref::float_to_bits;

// ---------------------------------------------------------------------------------------------------------
// Bookkeeping

static int g_passed = 0, g_failed = 0;
static bool g_exhaustive = true;  // --no-exhaustive skips the 2^32-input sweeps (e.g. under compute-sanitizer)

static void report(bool ok, const char* fmt, ...) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    va_list ap;
    va_start(ap, fmt);
    std::printf("FAIL: ");
    std::vprintf(fmt, ap);
    std::printf("\n");
    va_end(ap);
}

#define CK(expr)                                                                                     \
    do {                                                                                             \
        cudaError_t e_ = (expr);                                                                     \
        if (e_ != cudaSuccess) {                                                                     \
            std::printf("CUDA error %d (%s) at %s:%d: %s\n", int(e_), cudaGetErrorString(e_), __FILE__, \
                        __LINE__, #expr);                                                            \
            std::exit(2);                                                                            \
        }                                                                                            \
    } while (0)

// Calls into the library: a non-zero return is a failure of the case (reported by the caller).
#define LIBCALL(expr) (expr)

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
    int below(int n) { return int(next() % uint64_t(n)); }
    float normal() {
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
};

// Device buffer with a poisoned guard zone behind it (and in front of it, for misaligned sub-pointers).
constexpr size_t kGuard = 256;
struct DevBuf {
    uint8_t* base = nullptr;
    size_t bytes = 0;
    size_t shift = 0;  // data starts at base + kGuard + shift
    DevBuf() = default;
    DevBuf(size_t nbytes, size_t misalign = 0) { alloc(nbytes, misalign); }
    void alloc(size_t nbytes, size_t misalign = 0) {
        bytes = nbytes;
        shift = misalign;
        CK(cudaMalloc(&base, bytes + 2 * kGuard + 16));
    }
    ~DevBuf() {
        if (base) cudaFree(base);
    }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    void* ptr() const { return base + kGuard + shift; }
    size_t total() const { return bytes + 2 * kGuard + 16; }
    void poison(int v) { CK(cudaMemset(base, v, total())); }
    void upload(const void* h) {
        if (bytes) CK(cudaMemcpy(ptr(), h, bytes, cudaMemcpyHostToDevice));
    }
    void download(void* h) const {
        if (bytes) CK(cudaMemcpy(h, ptr(), bytes, cudaMemcpyDeviceToHost));
    }
    // true when everything outside [ptr, ptr + bytes) still holds the poison byte v
    bool guards_ok(int v) const {
        std::vector<uint8_t> all(total());
        CK(cudaMemcpy(all.data(), base, total(), cudaMemcpyDeviceToHost));
        const size_t lo = kGuard + shift, hi = lo + bytes;
        for (size_t i = 0; i < all.size(); ++i)
            if ((i < lo || i >= hi) && all[i] != uint8_t(v)) return false;
        return true;
    }
};

static bool same_f32(float a, float b) { return float_to_bits(a) == float_to_bits(b) || (a != a && b != b); }
static bool is_nan16(int dtype, uint16_t h) {
    return dtype == BNBD_BF16 ? ((h & 0x7F80u) == 0x7F80u && (h & 0x7Fu)) : ((h & 0x7C00u) == 0x7C00u && (h & 0x3FFu));
}
// compare n elements of dtype (NaN == NaN, any payload: x86 and the GPU produce different NaN bits)
static int64_t first_mismatch_elems(int dtype, const void* a, const void* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        if (dtype == BNBD_F32) {
            if (!same_f32(static_cast<const float*>(a)[i], static_cast<const float*>(b)[i])) return i;
        } else {
            uint16_t x = static_cast<const uint16_t*>(a)[i], y = static_cast<const uint16_t*>(b)[i];
            if (x != y && !(is_nan16(dtype, x) && is_nan16(dtype, y))) return i;
        }
    }
    return -1;
}
static int64_t first_mismatch_bytes(const uint8_t* a, const uint8_t* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (a[i] != b[i]) return i;
    return -1;
}

static const char* dtname(int dt) { return dt == BNBD_F32 ? "f32" : dt == BNBD_BF16 ? "bf16" : "f16"; }

// host input in dtype from f32 values (RN downcast)
static std::vector<uint8_t> to_dtype(int dtype, const std::vector<float>& x) {
    const size_t es = bnbref::dtype_size(dtype);
    std::vector<uint8_t> out(x.size() * es + 1);
    for (size_t i = 0; i < x.size(); ++i) bnbref::store_elem(dtype, out.data(), int64_t(i), x[i]);
    return out;
}

// Random data: normal * scale with special values sprinkled in (zeros block, -0, 1e-30, denormals, huge, NaN,
// inf, an all-denormal block, an all-NaN block) when there is room.
static std::vector<float> make_input(Rng& rng, int64_t n, int bs, bool specials) {
    std::vector<float> x(n);
    const float scale = float(std::pow(10.0, rng.uniform() * 4.0 - 2.0));
    for (int64_t i = 0; i < n; ++i) x[i] = rng.normal() * scale;
    if (!specials || n == 0) return x;
    const int64_t nb = (n + bs - 1) / bs;
    auto at = [&](int64_t b) { return std::min<int64_t>(n - 1, b * bs + rng.below(bs)); };
    const float specials_v[] = {-0.0f, 1e-30f, -1e-30f, 1e-40f, -3e-42f, 1e30f, -1e30f, 7.0e4f, -6.5e4f,
                                bits_to_float(0x7FC00000u), bits_to_float(0x00000001u), 40.0f};
    for (float v : specials_v) x[at(rng.below(int(nb)))] = v;
    if (rng.below(4) == 0) x[at(rng.below(int(nb)))] = INFINITY;
    if (nb >= 3) {
        const int64_t zb = 1 + rng.below(int(nb - 1));  // an all-zero block (or all -0 / mixed)
        for (int64_t i = zb * bs; i < std::min<int64_t>(n, (zb + 1) * bs); ++i) x[i] = (i & 1) ? -0.0f : 0.0f;
    }
    if (nb >= 4) {
        const int64_t db = rng.below(int(nb));  // an all-denormal block (1/absmax overflows)
        for (int64_t i = db * bs; i < std::min<int64_t>(n, (db + 1) * bs); ++i)
            x[i] = bits_to_float(uint32_t(rng.below(1 << 20))) * (rng.below(2) ? 1.f : -1.f);
    }
    if (nb >= 5) {
        const int64_t nb2 = rng.below(int(nb));  // an all-NaN block
        for (int64_t i = nb2 * bs; i < std::min<int64_t>(n, (nb2 + 1) * bs); ++i) x[i] = bits_to_float(0x7FC00000u);
    }
    return x;
}

static std::vector<float> random_ascending_code(Rng& rng, int kind) {
    std::vector<float> c(256);
    switch (kind) {
        case 0: c = bnbref::signed_dynamic_map(); break;
        case 1: c = bnbref::unsigned_dynamic_map(); break;
        case 2:  // create_linear_map(signed): 255 values in [-1, 1] and a padding zero (duplicate zeros)
            for (int i = 0; i < 255; ++i) c[i] = -1.0f + 2.0f * float(i) / 254.0f;
            c[255] = 0.0f;
            break;
        case 3:  // random normals
            for (auto& v : c) v = rng.normal();
            break;
        case 4:  // heavy duplicates, infinities at the ends, denormals and huge values
            for (int i = 0; i < 256; ++i) c[i] = float((rng.below(9) - 4)) * 0.25f;
            c[0] = -INFINITY;
            c[1] = -INFINITY;
            c[255] = INFINITY;
            c[10] = 1e-40f;
            c[11] = -1e-40f;
            c[12] = 3e38f;
            c[13] = 3e38f;
            break;
        default:  // exponentially spread magnitudes
            for (auto& v : c) v = float(std::exp(rng.normal() * 8.0)) * (rng.below(2) ? 1.f : -1.f);
            break;
    }
    std::sort(c.begin(), c.end());
    return c;
}

// ---------------------------------------------------------------------------------------------------------
// Code-search tests (device functions of src/codesearch.cuh)

__global__ void exhaustive_q8_kernel(const float* code, unsigned long long* nbad, unsigned int* first_bad) {
    __shared__ float s_mid[256];
    __shared__ float2 s_tab[bnbd::Q8_TABLE];
    bnbd::q8_compute_mids(s_mid, code);
    __syncthreads();
    bnbd::q8_build_table(s_tab, s_mid);
    __syncthreads();
    unsigned long long bad = 0, seen = 0;
    const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
    for (uint64_t u = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < (1ull << 32); u += stride) {
        ++seen;
        const float xn = __uint_as_float(uint32_t(u));
        const int a = bnbd::q8_search_table(s_tab, s_mid, xn);
        const int b = bnbd::q8_search_plain(s_mid, xn);
        if (a != b) {
            ++bad;
            atomicMin(first_bad, uint32_t(u));
        }
    }
    if (bad) atomicAdd(nbad, bad);
    atomicAdd(nbad + 1, seen);
}

__global__ void list_q8_kernel(const float* code, const float* xs, int n, int* plain, int* table) {
    __shared__ float s_mid[256];
    __shared__ float2 s_tab[bnbd::Q8_TABLE];
    bnbd::q8_compute_mids(s_mid, code);
    __syncthreads();
    bnbd::q8_build_table(s_tab, s_mid);
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        plain[i] = bnbd::q8_search_plain(s_mid, xs[i]);
        table[i] = bnbd::q8_search_table(s_tab, s_mid, xs[i]);
    }
}

__global__ void exhaustive_q4_kernel(unsigned long long* nbad, unsigned int* first_bad) {
    __shared__ float2 s_nf4[bnbd::NF4_TABLE];
    __shared__ float2 s_fp4[bnbd::FP4_TABLE];
    bnbd::nf4_build_table(s_nf4);
    bnbd::fp4_build_table(s_fp4);
    __syncthreads();
    unsigned long long bad = 0, seen = 0;
    const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
    for (uint64_t u = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < (1ull << 32); u += stride) {
        ++seen;
        const float xn = __uint_as_float(uint32_t(u));
        const bool ok = bnbd::nf4_table(s_nf4, xn) == bnbd::nf4_direct(xn) &&
                        bnbd::fp4_table(s_fp4, xn) == bnbd::fp4_direct(xn);
        if (!ok) {
            ++bad;
            atomicMin(first_bad, uint32_t(u));
        }
    }
    if (bad) atomicAdd(nbad, bad);
    atomicAdd(nbad + 1, seen);
}

__global__ void list_q4_kernel(const float* xs, int n, int* nf4, int* fp4) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        nf4[i] = bnbd::nf4_direct(xs[i]);
        fp4[i] = bnbd::fp4_direct(xs[i]);
    }
}

static float next_up(float f) { return std::nextafter(f, INFINITY); }
static float next_down(float f) { return std::nextafter(f, -INFINITY); }

static void add_around(std::vector<float>& xs, float v) {
    if (v != v) return;
    xs.push_back(v);
    xs.push_back(next_up(v));
    xs.push_back(next_down(v));
    xs.push_back(next_up(next_up(v)));
    xs.push_back(next_down(next_down(v)));
}

static void test_code_search(Rng& rng) {
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    DevBuf d_code(256 * 4);
    unsigned long long* d_nbad;
    unsigned int* d_first;
    CK(cudaMalloc(&d_nbad, 16));
    CK(cudaMalloc(&d_first, 4));
    for (int kind = 0; kind < 6; ++kind) {
        std::vector<float> code = random_ascending_code(rng, kind);
        d_code.upload(code.data());
        // (a) exhaustive: table search == plain search for all 2^32 inputs
        if (g_exhaustive) {
            CK(cudaMemset(d_nbad, 0, 16));
            CK(cudaMemset(d_first, 0xFF, 4));
            exhaustive_q8_kernel<<<sms * 4, 256>>>(static_cast<float*>(d_code.ptr()), d_nbad, d_first);
            CK(cudaGetLastError());
            unsigned long long nbad[2] = {0, 0};
            unsigned int first = 0;
            CK(cudaMemcpy(nbad, d_nbad, 16, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(&first, d_first, 4, cudaMemcpyDeviceToHost));
            report(nbad[0] == 0 && nbad[1] == (1ull << 32),
                   "q8 table vs plain search, code kind %d: %llu of %llu inputs differ (first 0x%08x)", kind, nbad[0],
                   nbad[1], first);
        }
        // (b) plain and table search vs the host reference on midpoints, codes and their neighbours
        std::vector<float> xs = {0.0f, -0.0f, INFINITY, -INFINITY, bits_to_float(0x7FC00000u),
                                 bits_to_float(0xFFC00000u), 1e-40f, -1e-40f, 2.0f, -2.0f, 1.0f, -1.0f};
        for (int j = 0; j < 255; ++j) {
            const float s = code[j] + code[j + 1];
            add_around(xs, s * 0.5f);
        }
        for (float c : code) add_around(xs, c);
        for (int i = 0; i < 2000; ++i) xs.push_back(float(rng.uniform() * 2.2 - 1.1));
        for (int i = 0; i < 500; ++i) xs.push_back(bits_to_float(uint32_t(rng.next())));
        const int n = int(xs.size());
        DevBuf d_xs(n * 4), d_p(n * 4), d_t(n * 4);
        d_xs.upload(xs.data());
        list_q8_kernel<<<64, 256>>>(static_cast<float*>(d_code.ptr()), static_cast<float*>(d_xs.ptr()), n,
                                    static_cast<int*>(d_p.ptr()), static_cast<int*>(d_t.ptr()));
        CK(cudaGetLastError());
        std::vector<int> hp(n), ht(n);
        d_p.download(hp.data());
        d_t.download(ht.data());
        int bad = -1;
        for (int i = 0; i < n && bad < 0; ++i) {
            const int r = bnbref::search8(code.data(), xs[i]);
            if (hp[i] != r || ht[i] != r) bad = i;
        }
        report(bad < 0, "q8 search vs reference, code kind %d: xn=%a (0x%08x) ref %d plain %d table %d", kind,
               bad >= 0 ? xs[bad] : 0.f, bad >= 0 ? float_to_bits(xs[bad]) : 0u,
               bad >= 0 ? bnbref::search8(code.data(), xs[bad]) : 0, bad >= 0 ? hp[bad] : 0, bad >= 0 ? ht[bad] : 0);
    }
    // 4-bit
    {
        if (g_exhaustive) {
            CK(cudaMemset(d_nbad, 0, 16));
            CK(cudaMemset(d_first, 0xFF, 4));
            exhaustive_q4_kernel<<<sms * 4, 256>>>(d_nbad, d_first);
            CK(cudaGetLastError());
            unsigned long long nbad[2] = {0, 0};
            unsigned int first = 0;
            CK(cudaMemcpy(nbad, d_nbad, 16, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(&first, d_first, 4, cudaMemcpyDeviceToHost));
            report(nbad[0] == 0 && nbad[1] == (1ull << 32),
                   "nf4/fp4 table vs direct thresholds: %llu of %llu inputs differ (first 0x%08x)", nbad[0], nbad[1], first);
        }
        std::vector<float> xs = {0.0f, -0.0f, INFINITY, -INFINITY, bits_to_float(0x7FC00000u),
                                 bits_to_float(0xFFC00000u), 1e-40f, -1e-40f, 2.0f, -2.0f, 1.0f, -1.0f};
        for (float t : bnbref::kNF4Thresholds) add_around(xs, t);
        const float fp4t[] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f};
        for (float t : fp4t) {
            add_around(xs, t);
            add_around(xs, -t);
        }
        for (int i = 0; i < 3000; ++i) xs.push_back(float(rng.uniform() * 2.2 - 1.1));
        const int n = int(xs.size());
        DevBuf d_xs(n * 4), d_a(n * 4), d_b(n * 4);
        d_xs.upload(xs.data());
        list_q4_kernel<<<16, 256>>>(static_cast<float*>(d_xs.ptr()), n, static_cast<int*>(d_a.ptr()),
                                    static_cast<int*>(d_b.ptr()));
        CK(cudaGetLastError());
        std::vector<int> ha(n), hb(n);
        d_a.download(ha.data());
        d_b.download(hb.data());
        int bad = -1;
        for (int i = 0; i < n && bad < 0; ++i)
            if (ha[i] != bnbref::nf4_code(xs[i]) || hb[i] != bnbref::fp4_code(xs[i])) bad = i;
        report(bad < 0, "nf4/fp4 direct vs reference at xn=%a", bad >= 0 ? xs[bad] : 0.f);
    }
    CK(cudaFree(d_nbad));
    CK(cudaFree(d_first));
}

// ---------------------------------------------------------------------------------------------------------
// 8-bit blockwise

static void test_quantize_blockwise(Rng& rng) {
    const int modes[] = {1, 2};  // table, plain
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (int bs = 32; bs <= 4096; bs *= 2) {
            const int64_t sizes[] = {1, bs - 1, bs, bs + 1, 2 * bs + 3, 2 * 4096 + bs / 2 + 1};
            for (int64_t n : sizes) {
                const int kind = rng.below(2);  // signed / unsigned dynamic map
                std::vector<float> code = random_ascending_code(rng, kind);
                const bool use_off = rng.below(3) == 0;
                const float off_v = use_off ? rng.normal() * 0.1f : 0.0f;
                const size_t misalign = (rng.below(4) == 0) ? bnbref::dtype_size(dtype) : 0;  // one element
                std::vector<float> xf = make_input(rng, n, bs, true);
                std::vector<uint8_t> A = to_dtype(dtype, xf);
                const int64_t nb = (n + bs - 1) / bs;
                std::vector<float> ref_absmax(nb);
                std::vector<uint8_t> ref_out(n);
                bnbref::quantize_blockwise(dtype, code.data(), A.data(), use_off ? &off_v : nullptr, ref_absmax.data(),
                                           ref_out.data(), n, bs);
                DevBuf d_code(256 * 4), d_A(n * bnbref::dtype_size(dtype), misalign), d_off(4),
                    d_absmax(nb * 4), d_out(n, misalign ? 1 : 0);
                d_code.upload(code.data());
                d_A.upload(A.data());
                d_off.upload(&off_v);
                for (int mode : modes) {
                    bnbd::g_q8_search_mode = mode;
                    for (int poison : {0xCD, 0x5A}) {
                        d_absmax.poison(poison);
                        d_out.poison(poison);
                        const int rc = bnbd_quantize_blockwise(dtype, static_cast<float*>(d_code.ptr()), d_A.ptr(),
                                                               use_off ? static_cast<float*>(d_off.ptr()) : nullptr,
                                                               static_cast<float*>(d_absmax.ptr()),
                                                               static_cast<uint8_t*>(d_out.ptr()), n, bs, nullptr);
                        CK(cudaDeviceSynchronize());
                        std::vector<float> absmax(nb);
                        std::vector<uint8_t> out(n);
                        d_absmax.download(absmax.data());
                        d_out.download(out.data());
                        const int64_t ba = first_mismatch_elems(BNBD_F32, absmax.data(), ref_absmax.data(), nb);
                        const int64_t bo = first_mismatch_bytes(out.data(), ref_out.data(), n);
                        const bool guards = d_absmax.guards_ok(poison) && d_out.guards_ok(poison);
                        report(rc == 0 && ba < 0 && bo < 0 && guards,
                               "quantize_blockwise %s bs=%d n=%lld code=%d off=%d mis=%d mode=%d poison=%02x: rc=%d "
                               "absmax@%lld out@%lld (got %d want %d, x=%a) guards=%d",
                               dtname(dtype), bs, (long long)n, kind, int(use_off), int(misalign), mode, poison, rc,
                               (long long)ba, (long long)bo, bo >= 0 ? out[bo] : -1, bo >= 0 ? ref_out[bo] : -1,
                               bo >= 0 ? bnbref::load_elem(dtype, A.data(), bo) : 0.f, int(guards));
                    }
                }
                bnbd::g_q8_search_mode = 0;
            }
        }
    }
    // Large inputs, automatic mode (table on a persistent grid) vs forced plain search: GPU vs GPU.
    for (int dtype = 0; dtype < 3; ++dtype) {
        const int64_t n = (int64_t(6) << 20) + 4099;
        const int bs = dtype == 0 ? 4096 : (dtype == 1 ? 64 : 256);
        std::vector<float> code = random_ascending_code(rng, dtype == 2 ? 1 : 0);
        std::vector<float> xf = make_input(rng, n, bs, true);
        std::vector<uint8_t> A = to_dtype(dtype, xf);
        const int64_t nb = (n + bs - 1) / bs;
        DevBuf d_code(256 * 4), d_A(n * bnbref::dtype_size(dtype)), d_a1(nb * 4), d_a2(nb * 4), d_o1(n), d_o2(n);
        d_code.upload(code.data());
        d_A.upload(A.data());
        d_o1.poison(0xCD);
        d_o2.poison(0x5A);
        bnbd::g_q8_search_mode = 0;
        int rc = bnbd_quantize_blockwise(dtype, static_cast<float*>(d_code.ptr()), d_A.ptr(), nullptr,
                                         static_cast<float*>(d_a1.ptr()), static_cast<uint8_t*>(d_o1.ptr()), n, bs,
                                         nullptr);
        bnbd::g_q8_search_mode = 2;
        rc |= bnbd_quantize_blockwise(dtype, static_cast<float*>(d_code.ptr()), d_A.ptr(), nullptr,
                                      static_cast<float*>(d_a2.ptr()), static_cast<uint8_t*>(d_o2.ptr()), n, bs,
                                      nullptr);
        bnbd::g_q8_search_mode = 0;
        CK(cudaDeviceSynchronize());
        std::vector<uint8_t> o1(n), o2(n);
        std::vector<float> a1(nb), a2(nb);
        d_o1.download(o1.data());
        d_o2.download(o2.data());
        d_a1.download(a1.data());
        d_a2.download(a2.data());
        // the absmax is checked against the reference (cheap), the codes table-vs-plain
        std::vector<float> x = bnbref::upcast(dtype, A.data(), n);
        std::vector<float> ref_a(nb);
        for (int64_t b = 0; b < nb; ++b) ref_a[b] = bnbref::block_absmax(x, b * bs, std::min<int64_t>(n, (b + 1) * bs));
        const int64_t bo = first_mismatch_bytes(o1.data(), o2.data(), n);
        const int64_t ba = first_mismatch_elems(BNBD_F32, a1.data(), ref_a.data(), nb);
        const int64_t ba2 = first_mismatch_elems(BNBD_F32, a2.data(), ref_a.data(), nb);
        report(rc == 0 && bo < 0 && ba < 0 && ba2 < 0,
               "quantize_blockwise large %s n=%lld bs=%d: auto vs plain codes @%lld, absmax @%lld/%lld", dtname(dtype),
               (long long)n, bs, (long long)bo, (long long)ba, (long long)ba2);
    }
}

// bs = 4096 with 16-bit inputs (quant_tile4k_kernel: tiles staged through a shared-memory ring, many tiles per
// CTA) against the host reference, 8-bit (table and plain search, with and without offset) and 4-bit; the sizes
// give CTAs of 1 to 6 tiles (every position in the stage ring) and partial last tiles.
static void test_quantize_4096_pipeline(Rng& rng) {
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int64_t cap = int64_t(sms) * 4;  // about the resident CTAs of the 16-bit kernels
    const int64_t tiles[] = {3, cap + 5, 2 * cap + 11, 3 * cap - 7, 4 * cap + 1, 5 * cap + 29};
    const int64_t tails[] = {0, 4095, 1, 2051, 777, 8};
    for (int v = 0; v < 6; ++v) {
        const int64_t n = tiles[v] * 4096 - (tails[v] ? 4096 - tails[v] : 0);
        const int dtype = 1 + (v & 1);
        const int bs = 4096;
        std::vector<float> xf = make_input(rng, n, bs, true);
        std::vector<uint8_t> A = to_dtype(dtype, xf);
        const int64_t nb = (n + bs - 1) / bs, nbytes = (n + 1) / 2;
        DevBuf d_A(n * bnbref::dtype_size(dtype)), d_code(1024), d_off(4), d_abs(nb * 4), d_out(n);
        d_A.upload(A.data());
        // 8-bit
        {
            std::vector<float> code = random_ascending_code(rng, v % 2);
            const bool use_off = v % 3 == 1;
            const float off_v = use_off ? rng.normal() * 0.1f : 0.0f;
            std::vector<float> ref_abs(nb);
            std::vector<uint8_t> ref_out(n);
            bnbref::quantize_blockwise(dtype, code.data(), A.data(), use_off ? &off_v : nullptr, ref_abs.data(),
                                       ref_out.data(), n, bs);
            d_code.upload(code.data());
            d_off.upload(&off_v);
            for (int mode : {0, 2}) {
                bnbd::g_q8_search_mode = mode;
                d_abs.poison(0xCD);
                d_out.poison(0xCD);
                const int rc = bnbd_quantize_blockwise(dtype, static_cast<float*>(d_code.ptr()), d_A.ptr(),
                                                       use_off ? static_cast<float*>(d_off.ptr()) : nullptr,
                                                       static_cast<float*>(d_abs.ptr()),
                                                       static_cast<uint8_t*>(d_out.ptr()), n, bs, nullptr);
                bnbd::g_q8_search_mode = 0;
                CK(cudaDeviceSynchronize());
                std::vector<float> ab(nb);
                std::vector<uint8_t> out(n);
                d_abs.download(ab.data());
                d_out.download(out.data());
                const int64_t ba = first_mismatch_elems(BNBD_F32, ab.data(), ref_abs.data(), nb);
                const int64_t bo = first_mismatch_bytes(out.data(), ref_out.data(), n);
                const bool guards = d_abs.guards_ok(0xCD) && d_out.guards_ok(0xCD);
                report(rc == 0 && ba < 0 && bo < 0 && guards,
                       "quantize_blockwise bs=4096 pipeline %s n=%lld off=%d mode=%d: rc=%d absmax@%lld out@%lld "
                       "guards=%d",
                       dtname(dtype), (long long)n, int(use_off), mode, rc, (long long)ba, (long long)bo,
                       int(guards));
            }
        }
        // 4-bit
        {
            const int qt = v % 2 == 0 ? BNBD_NF4 : BNBD_FP4;
            std::vector<float> ref_abs(nb);
            std::vector<uint8_t> ref_out(nbytes);
            bnbref::quantize_4bit(dtype, qt, A.data(), ref_abs.data(), ref_out.data(), n, bs);
            d_abs.poison(0x5A);
            d_out.poison(0x5A);
            const int rc = bnbd_quantize_4bit(dtype, qt, d_A.ptr(), static_cast<float*>(d_abs.ptr()),
                                              static_cast<uint8_t*>(d_out.ptr()), n, bs, nullptr);
            CK(cudaDeviceSynchronize());
            std::vector<float> ab(nb);
            std::vector<uint8_t> out(n);
            d_abs.download(ab.data());
            d_out.download(out.data());
            const int64_t ba = first_mismatch_elems(BNBD_F32, ab.data(), ref_abs.data(), nb);
            const int64_t bo = first_mismatch_bytes(out.data(), ref_out.data(), nbytes);
            bool tail_ok = true;  // bytes past (n + 1) / 2 untouched
            for (int64_t i = nbytes; i < n; ++i) tail_ok = tail_ok && out[i] == 0x5A;
            report(rc == 0 && ba < 0 && bo < 0 && tail_ok && d_abs.guards_ok(0x5A) && d_out.guards_ok(0x5A),
                   "quantize_4bit bs=4096 pipeline %s %s n=%lld: rc=%d absmax@%lld out@%lld", dtname(dtype),
                   qt ? "nf4" : "fp4", (long long)n, rc, (long long)ba, (long long)bo);
        }
    }
}

static void test_dequantize_blockwise(Rng& rng) {
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (int bs = 32; bs <= 4096; bs *= 2) {
            const int64_t sizes[] = {1, 15, 17, bs - 1, bs + 1, 3 * bs + 5, 70001};
            for (int64_t n : sizes) {
                std::vector<float> code = random_ascending_code(rng, rng.below(2));
                const int64_t nb = (n + bs - 1) / bs;
                std::vector<uint8_t> q(n);
                for (auto& v : q) v = uint8_t(rng.next());
                std::vector<float> absmax(nb);
                for (auto& a : absmax) a = std::fabs(rng.normal()) * 3.0f;
                if (nb > 1) absmax[1] = 0.0f;
                if (nb > 2) absmax[2] = 1e-39f;   // denormal products
                if (nb > 3) absmax[3] = INFINITY;  // code 0 * inf = NaN
                if (nb > 4) absmax[4] = 1e38f;     // overflow to inf in bf16/f16
                const size_t misalign = (rng.below(4) == 0) ? 1 : 0;
                const size_t es = bnbref::dtype_size(dtype);
                std::vector<uint8_t> ref(n * es);
                bnbref::dequantize_blockwise(dtype, code.data(), q.data(), absmax.data(), ref.data(), n, bs);
                DevBuf d_code(1024), d_q(n, misalign), d_abs(nb * 4), d_out(n * es, misalign ? es : 0);
                d_code.upload(code.data());
                d_q.upload(q.data());
                d_abs.upload(absmax.data());
                for (int poison : {0xCD, 0x5A}) {
                    d_out.poison(poison);
                    const int rc = bnbd_dequantize_blockwise(dtype, static_cast<float*>(d_code.ptr()),
                                                             static_cast<uint8_t*>(d_q.ptr()),
                                                             static_cast<float*>(d_abs.ptr()), d_out.ptr(), n, bs, nullptr);
                    CK(cudaDeviceSynchronize());
                    std::vector<uint8_t> out(n * es);
                    d_out.download(out.data());
                    const int64_t bad = first_mismatch_elems(dtype, out.data(), ref.data(), n);
                    const bool guards = d_out.guards_ok(poison);
                    report(rc == 0 && bad < 0 && guards,
                           "dequantize_blockwise %s bs=%d n=%lld mis=%d poison=%02x: rc=%d first bad %lld guards=%d",
                           dtname(dtype), bs, (long long)n, int(misalign), poison, rc, (long long)bad, int(guards));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 4-bit

static void test_quantize_4bit(Rng& rng) {
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (int qt = 0; qt < 2; ++qt) {
            for (int bs = 32; bs <= 4096; bs *= 2) {
                const int64_t sizes[] = {1, 2, 3, bs - 1, bs, bs + 1, 2 * bs + 3, 2 * 4096 + bs / 2 + 1, 50001};
                for (int64_t n : sizes) {
                    const size_t misalign = (rng.below(4) == 0) ? bnbref::dtype_size(dtype) : 0;
                    const size_t out_mis = (rng.below(4) == 0) ? 1 : 0;
                    std::vector<float> xf = make_input(rng, n, bs, true);
                    std::vector<uint8_t> A = to_dtype(dtype, xf);
                    const int64_t nb = (n + bs - 1) / bs, nbytes = (n + 1) / 2;
                    std::vector<float> ref_abs(nb);
                    std::vector<uint8_t> ref_out(nbytes);
                    bnbref::quantize_4bit(dtype, qt, A.data(), ref_abs.data(), ref_out.data(), n, bs);
                    DevBuf d_A(n * bnbref::dtype_size(dtype), misalign), d_abs(nb * 4), d_out(nbytes, out_mis);
                    d_A.upload(A.data());
                    for (int poison : {0xCD, 0x5A}) {
                        d_abs.poison(poison);
                        d_out.poison(poison);
                        const int rc = bnbd_quantize_4bit(dtype, qt, d_A.ptr(), static_cast<float*>(d_abs.ptr()),
                                                          static_cast<uint8_t*>(d_out.ptr()), n, bs, nullptr);
                        CK(cudaDeviceSynchronize());
                        std::vector<float> ab(nb);
                        std::vector<uint8_t> out(nbytes);
                        d_abs.download(ab.data());
                        d_out.download(out.data());
                        const int64_t ba = first_mismatch_elems(BNBD_F32, ab.data(), ref_abs.data(), nb);
                        const int64_t bo = first_mismatch_bytes(out.data(), ref_out.data(), nbytes);
                        const bool guards = d_abs.guards_ok(poison) && d_out.guards_ok(poison);
                        report(rc == 0 && ba < 0 && bo < 0 && guards,
                               "quantize_4bit %s %s bs=%d n=%lld mis=%d/%d poison=%02x: rc=%d absmax@%lld out@%lld "
                               "(got %02x want %02x) guards=%d",
                               dtname(dtype), qt ? "nf4" : "fp4", bs, (long long)n, int(misalign), int(out_mis), poison,
                               rc, (long long)ba, (long long)bo, bo >= 0 ? out[bo] : 0, bo >= 0 ? ref_out[bo] : 0,
                               int(guards));
                    }
                }
            }
        }
    }
}

static void test_dequantize_4bit(Rng& rng) {
    const std::vector<float> signed_map = bnbref::signed_dynamic_map();
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (int qt = 0; qt < 2; ++qt) {
            for (int bs = 32; bs <= 4096; bs *= 2) {
                const int64_t sizes[] = {1, 2, 31, 33, bs - 1, bs + 1, 3 * bs + 7, 100003};
                for (int64_t n : sizes) {
                    for (int nested = 0; nested < 2; ++nested) {
                        const int64_t nb = (n + bs - 1) / bs, nbytes = (n + 1) / 2;
                        const int nbs = rng.below(2) ? 256 : 100;  // power of two or not
                        const int64_t nnb = (nb + nbs - 1) / nbs;
                        std::vector<uint8_t> q(nbytes);
                        for (auto& v : q) v = uint8_t(rng.next());
                        std::vector<float> absmax(nb);
                        for (auto& a : absmax) a = std::fabs(rng.normal()) * 2.0f;
                        if (nb > 1) absmax[1] = 0.0f;
                        if (nb > 2) absmax[2] = 1e-39f;
                        std::vector<uint8_t> qabs(nb);
                        for (auto& v : qabs) v = uint8_t(rng.next());
                        std::vector<float> nabs(nnb);
                        for (auto& a : nabs) a = std::fabs(rng.normal()) * 0.5f;
                        const float off = std::fabs(rng.normal()) * 0.2f;
                        const size_t misalign = (rng.below(4) == 0) ? 1 : 0;
                        const size_t es = bnbref::dtype_size(dtype);
                        std::vector<uint8_t> ref(n * es);
                        if (nested)
                            bnbref::dequantize_4bit(dtype, qt, q.data(), nullptr, qabs.data(), nabs.data(),
                                                    signed_map.data(), &off, nbs, ref.data(), n, bs);
                        else
                            bnbref::dequantize_4bit(dtype, qt, q.data(), absmax.data(), nullptr, nullptr, nullptr,
                                                    nullptr, 0, ref.data(), n, bs);
                        DevBuf d_q(nbytes, misalign), d_abs(nb * 4), d_qabs(nb), d_nabs(nnb * 4), d_code(1024), d_off(4),
                            d_out(n * es, misalign ? es : 0);
                        d_q.upload(q.data());
                        d_abs.upload(absmax.data());
                        d_qabs.upload(qabs.data());
                        d_nabs.upload(nabs.data());
                        d_code.upload(signed_map.data());
                        d_off.upload(&off);
                        for (int poison : {0xCD, 0x5A}) {
                            d_out.poison(poison);
                            int rc;
                            if (nested)
                                rc = bnbd_dequantize_4bit(dtype, qt, static_cast<uint8_t*>(d_q.ptr()), nullptr,
                                                          static_cast<uint8_t*>(d_qabs.ptr()),
                                                          static_cast<float*>(d_nabs.ptr()),
                                                          static_cast<float*>(d_code.ptr()),
                                                          static_cast<float*>(d_off.ptr()), nbs, d_out.ptr(), n, bs,
                                                          nullptr);
                            else
                                rc = bnbd_dequantize_4bit(dtype, qt, static_cast<uint8_t*>(d_q.ptr()),
                                                          static_cast<float*>(d_abs.ptr()), nullptr, nullptr, nullptr,
                                                          nullptr, 0, d_out.ptr(), n, bs, nullptr);
                            CK(cudaDeviceSynchronize());
                            std::vector<uint8_t> out(n * es);
                            d_out.download(out.data());
                            const int64_t bad = first_mismatch_elems(dtype, out.data(), ref.data(), n);
                            const bool guards = d_out.guards_ok(poison);
                            report(rc == 0 && bad < 0 && guards,
                                   "dequantize_4bit %s %s bs=%d n=%lld nested=%d nbs=%d mis=%d poison=%02x: rc=%d "
                                   "first bad %lld guards=%d",
                                   dtname(dtype), qt ? "nf4" : "fp4", bs, (long long)n, nested, nbs, int(misalign),
                                   poison, rc, (long long)bad, int(guards));
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 4-bit GEMV: not bit-exact (f32 accumulation in its own order), so compared with an f64 dot product of x and the
// f32-dequantized weight (the reference dequantizer) within the header's bound
// (k / 32 + 40) * 2^-24 * sum |x w|, plus half an ulp of the output dtype (2^-8, 2^-11, 2^-24 relative).

static void test_gemv_4bit(Rng& rng) {
    const std::vector<float> signed_map = bnbref::signed_dynamic_map();
    struct Shape { int64_t n, k; };
    const Shape shapes[] = {{1, 32}, {7, 64}, {33, 96}, {130, 4096}, {64, 8192}, {257, 1000}, {5, 33}, {3, 1},
                            {9, 0}, {1000, 320}, {4, 4128}};
    const int blocksizes[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (int qt = 0; qt < 2; ++qt) {
            for (const Shape& sh : shapes) {
                for (int nested = 0; nested < 2; ++nested) {
                    const int bs = blocksizes[rng.below(8)];
                    const int64_t n = sh.n, k = sh.k, ne = n * k;
                    const int64_t nb = (ne + bs - 1) / bs, nbytes = (ne + 1) / 2;
                    const int nbs = rng.below(2) ? 256 : 100;
                    const int64_t nnb = std::max<int64_t>(1, (nb + nbs - 1) / nbs);
                    std::vector<uint8_t> q(std::max<int64_t>(1, nbytes));
                    for (auto& v : q) v = uint8_t(rng.next());
                    std::vector<float> absmax(std::max<int64_t>(1, nb));
                    for (auto& a : absmax) a = std::fabs(rng.normal()) * 2.0f;
                    if (nb > 1) absmax[1] = 0.0f;
                    std::vector<uint8_t> qabs(std::max<int64_t>(1, nb));
                    for (auto& v : qabs) v = uint8_t(rng.next());
                    std::vector<float> nabs(nnb);
                    for (auto& a : nabs) a = std::fabs(rng.normal()) * 0.5f;
                    const float off = std::fabs(rng.normal()) * 0.2f;
                    std::vector<float> xf(std::max<int64_t>(1, k));
                    for (auto& v : xf) v = rng.normal();
                    const std::vector<uint8_t> xh = to_dtype(dtype, xf);
                    for (int64_t i = 0; i < k; ++i) xf[i] = bnbref::load_elem(dtype, xh.data(), i);  // as rounded
                    // reference: f32 dequantized weight, f64 dot products
                    std::vector<float> w(std::max<int64_t>(1, ne));
                    if (nested)
                        bnbref::dequantize_4bit(BNBD_F32, qt, q.data(), nullptr, qabs.data(), nabs.data(),
                                                signed_map.data(), &off, nbs, w.data(), ne, bs);
                    else
                        bnbref::dequantize_4bit(BNBD_F32, qt, q.data(), absmax.data(), nullptr, nullptr, nullptr,
                                                nullptr, 0, w.data(), ne, bs);
                    std::vector<double> yref(n), ysum(n);
                    for (int64_t r = 0; r < n; ++r) {
                        double acc = 0, sa = 0;
                        for (int64_t j = 0; j < k; ++j) {
                            const double t = double(xf[j]) * double(w[r * k + j]);
                            acc += t;
                            sa += std::fabs(t);
                        }
                        yref[r] = acc;
                        ysum[r] = sa;
                    }
                    const double out_rel = dtype == BNBD_F32 ? std::ldexp(1.0, -24)
                                           : dtype == BNBD_BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
                    const double acc_rel = (double(k) / 32.0 + 40.0) * std::ldexp(1.0, -24);
                    const double out_abs = dtype == BNBD_F16 ? std::ldexp(1.0, -25) : 1e-30;
                    const size_t es = bnbref::dtype_size(dtype);
                    const size_t misalign = rng.below(4) == 0 ? es : 0;  // unaligned x: the element loop
                    DevBuf d_q(q.size()), d_abs(absmax.size() * 4), d_qabs(qabs.size()), d_nabs(nnb * 4), d_code(1024),
                        d_off(4), d_x(std::max<int64_t>(1, k) * es, misalign), d_y(n * es);
                    d_q.upload(q.data());
                    d_abs.upload(absmax.data());
                    d_qabs.upload(qabs.data());
                    d_nabs.upload(nabs.data());
                    d_code.upload(signed_map.data());
                    d_off.upload(&off);
                    d_x.upload(xh.data());
                    for (int rows : {0, 1, 2, 4}) {
                        bnbd::g_gemv_rows = rows;
                        const int poison = rows & 1 ? 0x5A : 0xCD;
                        d_y.poison(poison);
                        const int rc =
                            nested ? bnbd_gemv_4bit(dtype, qt, d_x.ptr(), static_cast<uint8_t*>(d_q.ptr()), nullptr,
                                                    static_cast<uint8_t*>(d_qabs.ptr()), static_cast<float*>(d_nabs.ptr()),
                                                    static_cast<float*>(d_code.ptr()), static_cast<float*>(d_off.ptr()),
                                                    nbs, d_y.ptr(), n, k, bs, nullptr)
                                   : bnbd_gemv_4bit(dtype, qt, d_x.ptr(), static_cast<uint8_t*>(d_q.ptr()),
                                                    static_cast<float*>(d_abs.ptr()), nullptr, nullptr, nullptr, nullptr,
                                                    0, d_y.ptr(), n, k, bs, nullptr);
                        CK(cudaDeviceSynchronize());
                        std::vector<uint8_t> yb(n * es + 1);
                        d_y.download(yb.data());
                        int64_t bad = -1;
                        double got = 0, want = 0;
                        for (int64_t r = 0; r < n && bad < 0; ++r) {
                            got = bnbref::load_elem(dtype, yb.data(), r);
                            want = yref[r];
                            // + half the spacing of f16 subnormals: below 2^-14 the final rounding is absolute
                            const double tol = acc_rel * ysum[r] + out_rel * (std::fabs(want) + acc_rel * ysum[r]) + out_abs;
                            if (!(std::fabs(got - want) <= tol)) bad = r;
                        }
                        const bool guards = d_y.guards_ok(poison);
                        report(rc == 0 && bad < 0 && guards,
                               "gemv_4bit %s %s n=%lld k=%lld bs=%d nested=%d nbs=%d mis=%d rows=%d: rc=%d first bad %lld "
                               "(%.9g vs %.9g) guards=%d",
                               dtname(dtype), qt ? "nf4" : "fp4", (long long)n, (long long)k, bs, nested, nbs,
                               int(misalign), rows, rc, (long long)bad, got, want, int(guards));
                    }
                    bnbd::g_gemv_rows = 0;
                }
            }
        }
    }
    // argument checks
    report(bnbd_gemv_4bit(BNBD_BF16, BNBD_NF4, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                          nullptr, 4, 64, 64, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
           "gemv_4bit rejects missing scales");
    report(bnbd_gemv_4bit(BNBD_BF16, BNBD_NF4, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                          nullptr, 4, 64, 48, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
           "gemv_4bit rejects blocksize 48");
}

// ---------------------------------------------------------------------------------------------------------
// mean

static void test_mean(Rng& rng) {
    const int64_t sizes[] = {0, 1, 2, 1023, 1024, 1025, 3000, 2048 * 1024 + 7, (int64_t(5) << 20) + 333};
    for (int64_t n : sizes) {
        for (int variant = 0; variant < 3; ++variant) {
            std::vector<float> x(n);
            for (int64_t i = 0; i < n; ++i) {
                if (variant == 2) {
                    // absmax-like: positive, bf16-precision values (the kernel's exact parallel path)
                    x[i] = bnbref::bf16_to_float(bnbref::float_to_bf16(1.0f + 3.0f * std::fabs(rng.normal())));
                    continue;
                }
                // wide dynamic range so that the summation order shows in the last bits (sequential path)
                const float mag = variant ? float(std::exp(rng.normal() * 6.0)) : std::fabs(rng.normal());
                x[i] = (rng.below(5) == 0 ? -mag : mag);
            }
            const float ref = bnbref::mean_f32(x.data(), n);
            const int64_t ws_bytes = bnbd_mean_workspace_bytes(n);
            DevBuf d_x(n * 4), d_out(4), d_ws(ws_bytes > 0 ? size_t(ws_bytes) : 8);
            d_x.upload(x.data());
            d_out.poison(0xCD);
            d_ws.poison(variant == 0 ? 0x7F : variant == 1 ? 0x00 : 0xFF);  // uninitialized workspace: no matter
            const int rc = bnbd_mean_f32(static_cast<float*>(d_x.ptr()), n, static_cast<float*>(d_out.ptr()),
                                         d_ws.ptr(), nullptr);
            CK(cudaDeviceSynchronize());
            float got = 0;
            d_out.download(&got);
            report(rc == 0 && float_to_bits(got) == float_to_bits(ref) && d_out.guards_ok(0xCD),
                   "mean_f32 n=%lld variant=%d: rc=%d got %.9g (0x%08x) want %.9g (0x%08x)", (long long)n, variant, rc,
                   got, float_to_bits(got), ref, float_to_bits(ref));
        }
    }
    // one workspace reused by back-to-back calls of several sizes (its completion word then holds the earlier
    // calls' words), also with nothing in between to order the calls but the stream
    {
        const int64_t sizes2[] = {3000, (int64_t(3) << 20) + 5, 1, 1024 * 9, 3000, 2048 * 1024 + 7, 77};
        const int64_t nmax = (int64_t(3) << 20) + 5;
        std::vector<float> x(nmax);
        for (auto& v : x) v = std::fabs(rng.normal()) * (rng.below(7) == 0 ? 1e6f : 1.0f);
        DevBuf d_x(nmax * 4), d_out(4 * 8), d_ws(size_t(bnbd_mean_workspace_bytes(nmax)));
        d_x.upload(x.data());
        d_ws.poison(0x00);
        d_out.poison(0xCD);
        int rc = 0;
        for (int i = 0; i < 7; ++i)
            rc |= bnbd_mean_f32(static_cast<float*>(d_x.ptr()), sizes2[i], static_cast<float*>(d_out.ptr()) + i,
                                d_ws.ptr(), nullptr);
        CK(cudaDeviceSynchronize());
        float got[8];
        d_out.download(got);
        for (int i = 0; i < 7; ++i) {
            const float ref = bnbref::mean_f32(x.data(), sizes2[i]);
            report(rc == 0 && float_to_bits(got[i]) == float_to_bits(ref),
                   "mean_f32 reused workspace, call %d n=%lld: rc=%d got %.9g want %.9g", i, (long long)sizes2[i], rc,
                   got[i], ref);
        }
    }
    report(bnbd_mean_workspace_bytes(0) == 0 && bnbd_mean_workspace_bytes(1) >= 8 &&
               bnbd_mean_workspace_bytes(1025) >= 16,
           "mean workspace sizes");
}

// ---------------------------------------------------------------------------------------------------------
// int8

static void test_int8(Rng& rng) {
    struct Shape {
        int64_t rows, cols;
    };
    const Shape shapes[] = {{1, 1}, {3, 7}, {5, 64}, {17, 1000}, {8, 8192}, {4, 16384}, {3, 20000}, {2, 4097},
                            {64, 320}, {2, 2048 + 8}};
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (const Shape& s : shapes) {
            for (int with_thr = 0; with_thr < 2; ++with_thr) {
                const int64_t n = s.rows * s.cols;
                const float thr = with_thr ? 3.0f : 0.0f;
                std::vector<float> xf(n);
                for (auto& v : xf) v = rng.normal();
                if (n > 10) {
                    xf[rng.below(int(n))] = 40.0f;   // outlier
                    xf[rng.below(int(n))] = -7.5f;   // outlier
                    xf[rng.below(int(n))] = bits_to_float(0x7FC00000u);
                    xf[rng.below(int(n))] = -0.0f;
                    if (rng.below(3) == 0) xf[rng.below(int(n))] = INFINITY;
                }
                if (s.rows > 2) {  // a zero row, a denormal-only row, a row of exact halves
                    for (int64_t c = 0; c < s.cols; ++c) xf[1 * s.cols + c] = 0.0f;
                    for (int64_t c = 0; c < s.cols; ++c) xf[2 * s.cols + c] = bits_to_float(uint32_t(rng.below(1 << 16)));
                }
                if (s.rows > 3) {
                    for (int64_t c = 0; c < s.cols; ++c) xf[3 * s.cols + c] = float(rng.below(255) - 127) * 0.5f;
                }
                std::vector<uint8_t> A = to_dtype(dtype, xf);
                std::vector<int8_t> ref(n);
                std::vector<float> ref_stats(s.rows);
                bnbref::int8_vectorwise_quant(dtype, A.data(), ref.data(), ref_stats.data(), s.rows, s.cols, thr);
                const size_t misalign = (rng.below(4) == 0) ? bnbref::dtype_size(dtype) : 0;
                DevBuf d_A(n * bnbref::dtype_size(dtype), misalign), d_out(n), d_stats(s.rows * 4);
                d_A.upload(A.data());
                for (int poison : {0xCD, 0x5A}) {
                    d_out.poison(poison);
                    d_stats.poison(poison);
                    const int rc = bnbd_int8_vectorwise_quant(dtype, d_A.ptr(), static_cast<int8_t*>(d_out.ptr()),
                                                              static_cast<float*>(d_stats.ptr()), s.rows, s.cols, thr,
                                                              nullptr);
                    CK(cudaDeviceSynchronize());
                    std::vector<int8_t> out(n);
                    std::vector<float> st(s.rows);
                    d_out.download(out.data());
                    d_stats.download(st.data());
                    const int64_t bo = first_mismatch_bytes(reinterpret_cast<uint8_t*>(out.data()),
                                                            reinterpret_cast<uint8_t*>(ref.data()), n);
                    const int64_t bs = first_mismatch_elems(BNBD_F32, st.data(), ref_stats.data(), s.rows);
                    const bool guards = d_out.guards_ok(poison) && d_stats.guards_ok(poison);
                    report(rc == 0 && bo < 0 && bs < 0 && guards,
                           "int8_vectorwise_quant %s %lldx%lld thr=%g mis=%d poison=%02x: rc=%d out@%lld (got %d want "
                           "%d) stats@%lld guards=%d",
                           dtname(dtype), (long long)s.rows, (long long)s.cols, thr, int(misalign), poison, rc,
                           (long long)bo, bo >= 0 ? out[bo] : 0, bo >= 0 ? ref[bo] : 0, (long long)bs, int(guards));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Double-quant pipeline (as the C# side runs it): 4-bit quantize, mean of the absmax, 8-bit quantize of
// absmax - mean with the signed map (nested bs 256), nested 4-bit dequantize.

static void test_double_quant_pipeline(Rng& rng) {
    const int64_t n = 256 * 320 + 1;
    const int bs = 64, nbs = 256;
    for (int dtype = 0; dtype < 3; ++dtype) {
        std::vector<float> xf = make_input(rng, n, bs, false);
        std::vector<uint8_t> A = to_dtype(dtype, xf);
        const int64_t nb = (n + bs - 1) / bs, nnb = (nb + nbs - 1) / nbs, nbytes = (n + 1) / 2;
        const std::vector<float> smap = bnbref::signed_dynamic_map();
        std::vector<float> r_abs(nb), r_nabs(nnb);
        std::vector<uint8_t> r_packed(nbytes), r_qabs(nb), r_out(n * bnbref::dtype_size(dtype));
        bnbref::quantize_4bit(dtype, BNBD_NF4, A.data(), r_abs.data(), r_packed.data(), n, bs);
        const float r_off = bnbref::mean_f32(r_abs.data(), nb);
        bnbref::quantize_blockwise(BNBD_F32, smap.data(), r_abs.data(), &r_off, r_nabs.data(), r_qabs.data(), nb, nbs);
        bnbref::dequantize_4bit(dtype, BNBD_NF4, r_packed.data(), nullptr, r_qabs.data(), r_nabs.data(), smap.data(),
                                &r_off, nbs, r_out.data(), n, bs);

        DevBuf d_A(n * bnbref::dtype_size(dtype)), d_abs(nb * 4), d_packed(nbytes), d_off(4),
            d_ws(size_t(bnbd_mean_workspace_bytes(nb))), d_code(1024), d_nabs(nnb * 4), d_qabs(nb),
            d_out(n * bnbref::dtype_size(dtype));
        d_A.upload(A.data());
        d_code.upload(smap.data());
        int rc = bnbd_quantize_4bit(dtype, BNBD_NF4, d_A.ptr(), static_cast<float*>(d_abs.ptr()),
                                    static_cast<uint8_t*>(d_packed.ptr()), n, bs, nullptr);
        rc |= bnbd_mean_f32(static_cast<float*>(d_abs.ptr()), nb, static_cast<float*>(d_off.ptr()), d_ws.ptr(), nullptr);
        rc |= bnbd_quantize_blockwise(BNBD_F32, static_cast<float*>(d_code.ptr()), d_abs.ptr(),
                                      static_cast<float*>(d_off.ptr()), static_cast<float*>(d_nabs.ptr()),
                                      static_cast<uint8_t*>(d_qabs.ptr()), nb, nbs, nullptr);
        rc |= bnbd_dequantize_4bit(dtype, BNBD_NF4, static_cast<uint8_t*>(d_packed.ptr()), nullptr,
                                   static_cast<uint8_t*>(d_qabs.ptr()), static_cast<float*>(d_nabs.ptr()),
                                   static_cast<float*>(d_code.ptr()), static_cast<float*>(d_off.ptr()), nbs, d_out.ptr(),
                                   n, bs, nullptr);
        CK(cudaDeviceSynchronize());
        float off = 0;
        d_off.download(&off);
        std::vector<uint8_t> qabs(nb), out(n * bnbref::dtype_size(dtype));
        d_qabs.download(qabs.data());
        d_out.download(out.data());
        const bool ok = rc == 0 && float_to_bits(off) == float_to_bits(r_off) &&
                        first_mismatch_bytes(qabs.data(), r_qabs.data(), nb) < 0 &&
                        first_mismatch_elems(dtype, out.data(), r_out.data(), n) < 0;
        report(ok, "double-quant pipeline %s: rc=%d offset %a vs %a", dtname(dtype), rc, off, r_off);
    }
}

// Argument validation and trivial calls.
static void test_api() {
    report(bnbd_abi_version() == BNBD_ABI_VERSION, "abi version");
    report(bnbd_error_string(0) != nullptr && bnbd_error_string(BNBD_ERR_INVALID_ARGUMENT) != nullptr &&
               bnbd_error_string(2) != nullptr && bnbd_error_string(-12345) != nullptr,
           "error strings");
    float* d = nullptr;
    CK(cudaMalloc(&d, 1 << 16));
    report(bnbd_quantize_blockwise(7, d, d, nullptr, d, (uint8_t*)d, 10, 64, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
           "reject dtype");
    report(bnbd_quantize_blockwise(0, d, d, nullptr, d, (uint8_t*)d, 10, 48, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
           "reject blocksize 48");
    report(bnbd_quantize_blockwise(0, d, d, nullptr, d, (uint8_t*)d, 10, 8192, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
           "reject blocksize 8192");
    report(bnbd_quantize_4bit(0, 3, d, d, (uint8_t*)d, 10, 64, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
           "reject quant_type");
    report(bnbd_quantize_blockwise(0, d, d, nullptr, d, (uint8_t*)d, 0, 64, nullptr) == 0, "n = 0");
    report(bnbd_dequantize_4bit(0, 1, (uint8_t*)d, d, (uint8_t*)d, d, d, d, 256, d, 10, 64, nullptr) ==
               BNBD_ERR_INVALID_ARGUMENT,
           "reject absmax and nested together");
    CK(cudaDeviceSynchronize());
    CK(cudaFree(d));
}

// ---------------------------------------------------------------------------------------------------------
// Benchmarks

__global__ void fill_kernel(float* p, int64_t n, uint32_t seed) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed ^ uint32_t(i >> 32) * 0x85EBCA77u;
        float s = 0.f;
        for (int k = 0; k < 4; ++k) {
            h ^= h >> 15;
            h *= 0x2C1B3C6Du;
            h ^= h >> 12;
            h *= 0x297A2D39u;
            h ^= h >> 15;
            s += float(h >> 8) * (1.0f / 16777216.0f);
        }
        p[i] = (s - 2.0f) * 1.7f;  // roughly normal, unit variance
    }
}
__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = __float2bfloat16_rn(in[i]);
}
__global__ void f32_to_f16_kernel(const float* in, __half* out, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = __float2half_rn(in[i]);
}
__global__ void fill_bytes_kernel(uint8_t* p, int64_t n, uint32_t seed) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
        h ^= h >> 16;
        h *= 0x7FEB352Du;
        h ^= h >> 15;
        p[i] = uint8_t(h >> 7);
    }
}

template <class F>
static float median_ms(F launch, int warm = 5, int iters = 30) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < warm; ++i) launch(i);
    std::vector<float> ts;
    for (int i = 0; i < iters; ++i) {
        CK(cudaEventRecord(a, 0));
        launch(warm + i);
        CK(cudaEventRecord(b, 0));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        ts.push_back(ms);
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
}

static std::string g_bench_filter;  // --bench-filter SUBSTRING: only matching benchmarks run
static int g_bench_iters = 30;

template <class F>
static void bench(const char* name, double bytes, double target_ms, F launch);

static void bench_line(const char* name, float ms, double bytes, double target_ms) {
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    if (target_ms > 0)
        std::printf("bench %-58s %8.4f ms %8.1f GB/s  (target <= %.3f ms: %s)\n", name, ms, gbs, target_ms,
                    ms <= target_ms ? "met" : "MISSED");
    else
        std::printf("bench %-58s %8.4f ms %8.1f GB/s\n", name, ms, gbs);
}

template <class F>
static void bench(const char* name, double bytes, double target_ms, F launch) {
    if (!g_bench_filter.empty() && std::string(name).find(g_bench_filter) == std::string::npos) return;
    const float ms = median_ms(launch, 5, g_bench_iters);
    bench_line(name, ms, bytes, target_ms);
}

__global__ void empty_kernel() {}

#define BCALL(expr)                                                                 \
    do {                                                                            \
        int rc_ = (expr);                                                           \
        if (rc_ != 0) {                                                             \
            std::printf("bench call failed: %d (%s): %s\n", rc_, bnbd_error_string(rc_), #expr); \
            std::exit(3);                                                           \
        }                                                                           \
    } while (0)

static void run_benchmarks() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    const int64_t N = int64_t(1) << 28;  // 268435456
    float *xa[2], *deq;
    uint8_t *qa[2], *q8;
    float* absmax;
    CK(cudaMalloc(&xa[0], N * 4));
    CK(cudaMalloc(&xa[1], N * 4));
    CK(cudaMalloc(&deq, N * 4));
    CK(cudaMalloc(&qa[0], N));
    CK(cudaMalloc(&qa[1], N));
    CK(cudaMalloc(&q8, N));
    CK(cudaMalloc(&absmax, (N / 32) * 4));
    fill_kernel<<<4096, 256>>>(xa[0], N, 1u);
    fill_kernel<<<4096, 256>>>(xa[1], N, 2u);
    fill_bytes_kernel<<<4096, 256>>>(qa[0], N, 3u);
    fill_bytes_kernel<<<4096, 256>>>(qa[1], N, 4u);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    float* d_code;
    CK(cudaMalloc(&d_code, 1024));
    const std::vector<float> smap = bnbref::signed_dynamic_map();
    CK(cudaMemcpy(d_code, smap.data(), 1024, cudaMemcpyHostToDevice));
    // absmax for dequant: positive
    fill_kernel<<<1024, 256>>>(absmax, N / 32, 5u);
    CK(cudaDeviceSynchronize());

    // launch overhead baselines (event to event around empty kernels)
    bench("empty kernel x1 (launch overhead)", 0, 0, [&](int) { empty_kernel<<<1, 32>>>(); });
    bench("empty kernel x2 (launch overhead)", 0, 0, [&](int) {
        empty_kernel<<<1, 32>>>();
        empty_kernel<<<1, 32>>>();
    });
    // copy bandwidth (device to device, 1 GiB each way)
    {
        bench("cudaMemcpy D2D 1 GiB (read + write)", 2.0 * N * 4, 0,
              [&](int i) { CK(cudaMemcpyAsync(deq, xa[i & 1], N * 4, cudaMemcpyDeviceToDevice, 0)); });
    }
    {
        bench("quantize_blockwise f32 n=2^28 bs=4096", N * 4.0 + N + (N / 4096) * 4.0, 0.55, [&](int i) {
            BCALL(bnbd_quantize_blockwise(BNBD_F32, d_code, xa[i & 1], nullptr, absmax, q8, N, 4096, nullptr));
        });
    }
    {
        // bf16 inputs live in the first half of the f32 buffers
        for (int k = 0; k < 2; ++k) {
            f32_to_bf16_kernel<<<4096, 256>>>(xa[k], reinterpret_cast<__nv_bfloat16*>(deq), N);
            CK(cudaMemcpy(xa[k], deq, N * 2, cudaMemcpyDeviceToDevice));
        }
        CK(cudaDeviceSynchronize());
        bench("quantize_blockwise bf16 n=2^28 bs=4096", N * 2.0 + N + (N / 4096) * 4.0, 0.35, [&](int i) {
            BCALL(bnbd_quantize_blockwise(BNBD_BF16, d_code, xa[i & 1], nullptr, absmax, q8, N, 4096, nullptr));
        });
        bench("quantize_blockwise bf16 n=2^28 bs=64", N * 2.0 + N + (N / 64) * 4.0, 0, [&](int i) {
            BCALL(bnbd_quantize_blockwise(BNBD_BF16, d_code, xa[i & 1], nullptr, absmax, q8, N, 64, nullptr));
        });
    }
    {
        fill_kernel<<<1024, 256>>>(absmax, N / 4096, 6u);
        CK(cudaDeviceSynchronize());
        bench("dequantize_blockwise -> f32 n=2^28 bs=4096", N * 1.0 + N * 4.0 + (N / 4096) * 4.0, 0.50, [&](int i) {
            BCALL(bnbd_dequantize_blockwise(BNBD_F32, d_code, qa[i & 1], absmax, deq, N, 4096, nullptr));
        });
        bench("dequantize_blockwise -> bf16 n=2^28 bs=4096", N * 1.0 + N * 2.0 + (N / 4096) * 4.0, 0, [&](int i) {
            BCALL(bnbd_dequantize_blockwise(BNBD_BF16, d_code, qa[i & 1], absmax, deq, N, 4096, nullptr));
        });
    }
    // 4-bit NF4 8192 x 8192 bf16, bs 64, double quant
    {
        const int64_t M = int64_t(8192) * 8192;
        const int bs = 64, nbs = 256;
        const int64_t nb = M / bs, nnb = (nb + nbs - 1) / nbs;
        // bf16 inputs: reuse the bf16 data written above (2 buffers)
        void* A4[2] = {xa[0], xa[1]};
        uint8_t* packed[2] = {qa[0], qa[1]};  // (reused, 32 MB each)
        float *abs4, *nabs, *off, *d_nc;
        uint8_t* qabs;
        void* ws;
        CK(cudaMalloc(&abs4, nb * 4));
        CK(cudaMalloc(&nabs, nnb * 4));
        CK(cudaMalloc(&off, 4));
        CK(cudaMalloc(&qabs, nb));
        CK(cudaMalloc(&ws, size_t(bnbd_mean_workspace_bytes(nb))));
        d_nc = d_code;
        const double q_bytes = M * 2.0 + M / 2.0 + nb * 4.0;
        bench("quantize_4bit nf4 bf16 8192^2 bs=64 (no DQ)", q_bytes, 0, [&](int i) {
            BCALL(bnbd_quantize_4bit(BNBD_BF16, BNBD_NF4, A4[i & 1], abs4, packed[i & 1], M, bs, nullptr));
        });
        bench("mean_f32 n=2^20", nb * 4.0, 0, [&](int) { BCALL(bnbd_mean_f32(abs4, nb, off, ws, nullptr)); });
        {
            void* ws2;
            const int64_t nbig = int64_t(1) << 24;
            CK(cudaMalloc(&ws2, size_t(bnbd_mean_workspace_bytes(nbig))));
            bench("mean_f32 n=1024 (launch overhead)", 4096.0, 0,
                  [&](int) { BCALL(bnbd_mean_f32(abs4, 1024, off, ws2, nullptr)); });
            bench("mean_f32 n=2^24", nbig * 4.0, 0, [&](int) { BCALL(bnbd_mean_f32(deq, nbig, off, ws2, nullptr)); });
            CK(cudaFree(ws2));
        }
        bench("quantize_blockwise f32 n=2^20 bs=256 (nested absmax)", nb * 5.0 + nnb * 4.0, 0, [&](int) {
            BCALL(bnbd_quantize_blockwise(BNBD_F32, d_nc, abs4, off, nabs, qabs, nb, nbs, nullptr));
        });
        bench("NF4 quantize + double quant, 8192^2 bf16 bs=64 (total)", q_bytes + nb * 4.0 + nb * 5.0 + nnb * 4.0, 0.08,
              [&](int i) {
                  BCALL(bnbd_quantize_4bit(BNBD_BF16, BNBD_NF4, A4[i & 1], abs4, packed[i & 1], M, bs, nullptr));
                  BCALL(bnbd_mean_f32(abs4, nb, off, ws, nullptr));
                  BCALL(bnbd_quantize_blockwise(BNBD_F32, d_nc, abs4, off, nabs, qabs, nb, nbs, nullptr));
              });
        bench("NF4 dequantize nested -> bf16, 8192^2 bs=64", M / 2.0 + nb + nnb * 4.0 + M * 2.0, 0.07, [&](int i) {
            BCALL(bnbd_dequantize_4bit(BNBD_BF16, BNBD_NF4, packed[i & 1], nullptr, qabs, nabs, d_nc, off, nbs, deq, M,
                                       bs, nullptr));
        });
        bench("NF4 dequantize plain absmax -> bf16, 8192^2 bs=64", M / 2.0 + nb * 4.0 + M * 2.0, 0, [&](int i) {
            BCALL(bnbd_dequantize_4bit(BNBD_BF16, BNBD_NF4, packed[i & 1], abs4, nullptr, nullptr, nullptr, nullptr, 0,
                                       deq, M, bs, nullptr));
        });
        // 4-bit GEMV 1 x 8192 . (8192 x 8192 NF4)^T, weights rotated between two 32 MiB buffers (more than L2)
        {
            const double gbytes = M / 2.0 + nb + nnb * 4.0 + 8192 * 2.0 * 2;
            for (int rows : {0, 1, 2, 4}) {
                bnbd::g_gemv_rows = rows;
                char name[96];
                std::snprintf(name, sizeof name, "gemv_4bit NF4 nested bf16 1x8192 . 8192x8192 rows/warp=%s",
                              rows == 0 ? "auto" : rows == 1 ? "1" : rows == 2 ? "2" : "4");
                bench(name, gbytes, rows == 0 ? 0.016 : 0, [&](int i) {
                    BCALL(bnbd_gemv_4bit(BNBD_BF16, BNBD_NF4, xa[0], packed[i & 1], nullptr, qabs, nabs, d_nc, off,
                                         nbs, deq, 8192, 8192, bs, nullptr));
                });
            }
            bnbd::g_gemv_rows = 0;
            bench("gemv_4bit NF4 plain absmax bf16 1x8192 . 8192x8192", M / 2.0 + nb * 4.0 + 8192 * 4.0, 0, [&](int i) {
                BCALL(bnbd_gemv_4bit(BNBD_BF16, BNBD_NF4, xa[0], packed[i & 1], abs4, nullptr, nullptr, nullptr,
                                     nullptr, 0, deq, 8192, 8192, bs, nullptr));
            });
            bench("gemv_4bit NF4 nested f32 1x8192 . 8192x8192", M / 2.0 + nb + nnb * 4.0 + 8192 * 8.0, 0, [&](int i) {
                BCALL(bnbd_gemv_4bit(BNBD_F32, BNBD_NF4, xa[1], packed[i & 1], nullptr, qabs, nabs, d_nc, off, nbs,
                                     deq, 8192, 8192, bs, nullptr));
            });
            bench("gemv_4bit NF4 nested bf16 1x4096 . 11008x4096 (7B MLP)", 11008.0 * 4096 / 2 + 11008.0 * 64, 0,
                  [&](int i) {
                      BCALL(bnbd_gemv_4bit(BNBD_BF16, BNBD_NF4, xa[0], packed[i & 1], nullptr, qabs, nabs, d_nc, off,
                                           nbs, deq, 11008, 4096, bs, nullptr));
                  });
        }
        // int8 vector-wise 8192 x 8192 f16
        for (int k = 0; k < 2; ++k) {
            fill_kernel<<<4096, 256>>>(deq, M, 10u + k);
            f32_to_f16_kernel<<<4096, 256>>>(deq, reinterpret_cast<__half*>(xa[k]), M);
        }
        CK(cudaDeviceSynchronize());
        float* stats;
        CK(cudaMalloc(&stats, 8192 * 4));
        bench("int8_vectorwise_quant f16 8192x8192", M * 2.0 + M + 8192 * 4.0, 0, [&](int i) {
            BCALL(bnbd_int8_vectorwise_quant(BNBD_F16, xa[i & 1], reinterpret_cast<int8_t*>(q8), stats, 8192, 8192,
                                             0.0f, nullptr));
        });
        bench("int8_vectorwise_quant f16 8192x8192 threshold 6", M * 2.0 + M + 8192 * 4.0, 0, [&](int i) {
            BCALL(bnbd_int8_vectorwise_quant(BNBD_F16, xa[i & 1], reinterpret_cast<int8_t*>(q8), stats, 8192, 8192,
                                             6.0f, nullptr));
        });
        CK(cudaFree(stats));
        CK(cudaFree(abs4));
        CK(cudaFree(nabs));
        CK(cudaFree(off));
        CK(cudaFree(qabs));
        CK(cudaFree(ws));
    }
    CK(cudaFree(d_code));
    CK(cudaFree(xa[0]));
    CK(cudaFree(xa[1]));
    CK(cudaFree(deq));
    CK(cudaFree(qa[0]));
    CK(cudaFree(qa[1]));
    CK(cudaFree(q8));
    CK(cudaFree(absmax));
}

#include "selftest_optim.cuh"

int main(int argc, char** argv) {
    bool do_bench = true, tests = true;
    std::string only;  // --only LIST: run the test groups whose name occurs in LIST (e.g. "mean,4bit")
    uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--no-bench")) do_bench = false;
        else if (!std::strcmp(argv[i], "--bench-only")) tests = false;
        else if (!std::strcmp(argv[i], "--no-exhaustive")) g_exhaustive = false;
        else if (!std::strcmp(argv[i], "--bench-filter") && i + 1 < argc) g_bench_filter = argv[++i];
        else if (!std::strcmp(argv[i], "--bench-iters") && i + 1 < argc) g_bench_iters = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
        else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    }
    int ndev = 0;
    CK(cudaGetDeviceCount(&ndev));
    CK(cudaSetDevice(0));
    std::printf("bnbdist kernels selftest, ABI %d, seed %llu\n", bnbd_abi_version(), (unsigned long long)seed);
    Rng rng(seed);
    if (tests) {
        auto t0 = std::chrono::steady_clock::now();
        auto lap = [&](const char* what) {
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::printf("  %-28s done at %6.1f s (passed %d, failed %d)\n", what, s, g_passed, g_failed);
            std::fflush(stdout);
        };
        auto want = [&](const char* group) { return only.empty() || only.find(group) != std::string::npos; };
        if (want("api")) test_api();
        lap("api");
        if (want("search")) test_code_search(rng);
        lap("code search");
        if (want("blockwise")) {
            test_quantize_blockwise(rng);
            test_quantize_4096_pipeline(rng);
        }
        lap("quantize_blockwise");
        if (want("dequant8")) test_dequantize_blockwise(rng);
        lap("dequantize_blockwise");
        if (want("4bit")) test_quantize_4bit(rng);
        lap("quantize_4bit");
        if (want("dequant4")) test_dequantize_4bit(rng);
        lap("dequantize_4bit");
        if (want("gemv")) test_gemv_4bit(rng);
        lap("gemv_4bit");
        if (want("mean")) test_mean(rng);
        lap("mean_f32");
        if (want("int8")) test_int8(rng);
        lap("int8_vectorwise_quant");
        if (want("pipeline")) test_double_quant_pipeline(rng);
        lap("double-quant pipeline");
        if (want("optim")) test_optimizers(rng);
        lap("optimizers");
    }
    if (do_bench) {
        run_benchmarks();
        run_optim_benchmarks();
    }
    std::printf("selftest: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
