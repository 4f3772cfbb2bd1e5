// Self-test and benchmarks of the optimizer updates (src/optim8bit.cu); included by selftest.cu, whose helpers
// (report, Rng, DevBuf, bench, fill kernels) it uses. Every case runs several steps over many tensors in one launch
// (sizes with partial blocks, one misaligned tensor for the scalar path, special gradient values) and compares
// parameters, state codes and absmax bit for bit with tests/optim_reference.h, with guard zones around every buffer.
#include "optim_reference.h"

namespace bnbd {
extern int g_optim_search_mode;
}

__global__ void exhaustive_q8up_kernel(const float* code, unsigned long long* nbad, unsigned int* first_bad) {
    __shared__ float s_mid[256];
    __shared__ float2 s_tab[bnbd::Q8_TABLE];
    bnbd::q8_compute_mids(s_mid, code);
    __syncthreads();
    bnbd::q8_build_table<true>(s_tab, s_mid);
    __syncthreads();
    unsigned long long bad = 0, seen = 0;
    const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
    for (uint64_t u = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < (1ull << 32); u += stride) {
        ++seen;
        const float xn = __uint_as_float(uint32_t(u));
        if (bnbd::q8_search_table<true>(s_tab, s_mid, xn) != bnbd::q8_search_plain_up(s_mid, xn)) {
            ++bad;
            atomicMin(first_bad, uint32_t(u));
        }
    }
    if (bad) atomicAdd(nbad, bad);
    atomicAdd(nbad + 1, seen);
}

__global__ void list_q8up_kernel(const float* code, const float* xs, int n, int* out) {
    __shared__ float s_mid[256];
    bnbd::q8_compute_mids(s_mid, code);
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = bnbd::q8_search_plain_up(s_mid, xs[i]);
}

// The ties-up search: plain search vs the host rule, and (exhaustively) the bucket table vs the plain search.
static void test_optim_search(Rng& rng) {
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    unsigned long long* d_nbad;
    unsigned int* d_first;
    CK(cudaMalloc(&d_nbad, 16));
    CK(cudaMalloc(&d_first, 4));
    for (int kind = 0; kind < 6; ++kind) {
        const std::vector<float> code = random_ascending_code(rng, kind);
        DevBuf d_code(256 * 4);
        d_code.upload(code.data());
        if (g_exhaustive || kind < 2) {  // the two dynamic maps always (a sweep takes well under a second)
            CK(cudaMemset(d_nbad, 0, 16));
            CK(cudaMemset(d_first, 0xFF, 4));
            exhaustive_q8up_kernel<<<sms * 4, 256>>>(static_cast<float*>(d_code.ptr()), d_nbad, d_first);
            CK(cudaGetLastError());
            unsigned long long nbad[2] = {0, 0};
            unsigned int first = 0;
            CK(cudaMemcpy(nbad, d_nbad, 16, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(&first, d_first, 4, cudaMemcpyDeviceToHost));
            report(nbad[0] == 0 && nbad[1] == (1ull << 32),
                   "q8 ties-up table vs plain search, code kind %d: %llu of %llu inputs differ (first 0x%08x)", kind,
                   nbad[0], nbad[1], first);
        }
        float mids[255];
        bnbref::state_midpoints(code.data(), mids);
        std::vector<float> xs = {0.0f, -0.0f, INFINITY, -INFINITY, bits_to_float(0x7FC00000u), 1e-40f, -1e-40f};
        for (float m : mids) add_around(xs, m);
        for (int i = 0; i < 2000; ++i) xs.push_back(float(rng.uniform() * 2.2 - 1.1));
        const int n = int(xs.size());
        DevBuf d_xs(n * 4), d_out(n * 4);
        d_xs.upload(xs.data());
        list_q8up_kernel<<<16, 256>>>(static_cast<float*>(d_code.ptr()), static_cast<float*>(d_xs.ptr()), n,
                                      static_cast<int*>(d_out.ptr()));
        CK(cudaGetLastError());
        std::vector<int> got(n);
        d_out.download(got.data());
        int bad = -1;
        for (int i = 0; i < n && bad < 0; ++i)
            if (got[i] != bnbref::nearest_upper(xs[i], mids)) bad = i;
        report(bad < 0, "q8 ties-up plain search vs reference, code kind %d at xn=%a", kind, bad >= 0 ? xs[bad] : 0.f);
    }
    CK(cudaFree(d_nbad));
    CK(cudaFree(d_first));
}

namespace {

// One tensor of a test launch: device buffers with guards, and the host mirror the reference updates.
struct OptimCase {
    int64_t n;
    size_t misalign;  // bytes; non-zero sends the tensor down the scalar path
    DevBuf p, g, s1, s2, a1, a2;
    std::vector<uint8_t> hp, hg, hs1, hs2;  // param/grad in dtype; 8-bit codes, or f32 moments for 32-bit
    std::vector<float> ha1, ha2;
};

constexpr int kGuardByte = 0xCD;

std::vector<float> optim_grad(Rng& rng, int64_t n, bool specials) {
    std::vector<float> g(n);
    const float scale = float(std::pow(10.0, rng.uniform() * 4.0 - 3.0));
    for (auto& x : g) x = rng.normal() * scale;
    if (specials && n > 8) {
        const float sv[] = {0.0f, -0.0f, 1e-30f, -1e-38f, 1e30f, NAN, INFINITY, -INFINITY, 3e-42f};
        for (float v : sv) g[rng.below(int(n))] = v;
    }
    if (specials && n >= 512 && rng.below(2)) {  // a block of zero gradients (absmax 0 if the state was 0 too)
        const int64_t b = rng.below(int(n / 256));
        for (int64_t i = b * 256; i < std::min<int64_t>(n, b * 256 + 256); ++i) g[i] = 0.0f;
    }
    return g;
}

}  // namespace

// eight: 8-bit blockwise states, else 32-bit. Returns false on the first mismatch (reported).
// mode: g_optim_search_mode for the 8-bit kernels (0 default table search, 1 table without L2 prefetch, 2 plain search,
// 3 table with L2 prefetch).
static bool run_optim_case(Rng& rng, int rule, bool eight, int dtype, float wd, int mode, int steps) {
    const bool table = mode != 2;
    const bool two = rule == BNBD_OPTIM_ADAM;
    const size_t es = bnbref::dtype_size(dtype);
    std::vector<int64_t> sizes = {1, 255, 256, 257, 4096, 1000 + rng.below(5000), 70000 + rng.below(300), 7};
    for (int i = 0, extra = rng.below(30); i < extra; ++i) sizes.push_back(1 + rng.below(3000));
    const int nt = int(sizes.size());
    std::vector<OptimCase> cs(nt);
    std::vector<bnbd_optim_tensor> desc(nt);
    int64_t blocks = 0;
    const std::vector<float> q1 = bnbref::signed_dynamic_map(), q2 = bnbref::unsigned_dynamic_map();
    for (int t = 0; t < nt; ++t) {
        OptimCase& c = cs[t];
        c.n = sizes[t];
        c.misalign = (t == 5) ? es : 0;  // one tensor with params one element off 16-byte alignment
        const int64_t nb = (c.n + 255) / 256;
        std::vector<float> p0(c.n);
        for (auto& x : p0) x = rng.normal();
        c.hp = to_dtype(dtype, p0);
        c.hp.resize(c.n * es);
        c.p.alloc(c.n * es, c.misalign);
        c.g.alloc(c.n * es);
        const size_t sb = eight ? 1 : 4;
        c.s1.alloc(c.n * sb);
        c.s2.alloc(two ? c.n * sb : 0);
        c.hs1.resize(c.n * sb);
        c.hs2.resize(two ? c.n * sb : 0);
        if (eight) {
            for (auto& b : c.hs1) b = uint8_t(rng.below(256));
            for (auto& b : c.hs2) b = uint8_t(rng.below(256));
            c.ha1.resize(nb);
            c.ha2.resize(two ? nb : 0);
            for (auto& a : c.ha1) a = rng.below(8) == 0 ? 0.0f : std::fabs(rng.normal()) * 0.05f;
            for (auto& a : c.ha2) a = rng.below(8) == 0 ? 0.0f : std::fabs(rng.normal()) * 0.001f;
            c.a1.alloc(nb * 4);
            c.a2.alloc(two ? nb * 4 : 0);
        } else {
            float* m = reinterpret_cast<float*>(c.hs1.data());
            float* v = reinterpret_cast<float*>(c.hs2.data());
            for (int64_t i = 0; i < c.n; ++i) m[i] = rng.normal() * 0.01f;
            for (int64_t i = 0; two && i < c.n; ++i) v[i] = std::fabs(rng.normal()) * 1e-4f;
        }
        for (DevBuf* b : {&c.p, &c.g, &c.s1, &c.s2, &c.a1, &c.a2})
            if (b->base) b->poison(kGuardByte);
        c.p.upload(c.hp.data());
        c.s1.upload(c.hs1.data());
        if (two) c.s2.upload(c.hs2.data());
        if (eight) {
            c.a1.upload(c.ha1.data());
            if (two) c.a2.upload(c.ha2.data());
        }
        desc[t] = bnbd_optim_tensor{c.p.ptr(), c.g.ptr(), c.s1.ptr(), two ? c.s2.ptr() : nullptr,
                                    eight ? static_cast<float*>(c.a1.ptr()) : nullptr,
                                    eight && two ? static_cast<float*>(c.a2.ptr()) : nullptr, c.n, blocks};
        blocks += nb;
    }
    DevBuf d_desc(nt * sizeof(bnbd_optim_tensor)), d_q1(1024), d_q2(1024);
    d_desc.upload(desc.data());
    d_q1.upload(q1.data());
    d_q2.upload(q2.data());
    const char* rnames[] = {"adam", "momentum", "lion", "rmsprop"};
    char rname[32];
    std::snprintf(rname, sizeof rname, "%s%d", rnames[rule], eight ? 8 : 32);
    bnbd::g_optim_search_mode = mode;
    for (int step = 1; step <= steps; ++step) {
        const float beta1 = rule == BNBD_OPTIM_RMSPROP ? 0.99f : 0.9f, beta2 = rule == BNBD_OPTIM_LION ? 0.99f : 0.999f;
        const float lr = rule == BNBD_OPTIM_LION ? 1e-4f : rule == BNBD_OPTIM_MOMENTUM ? 1e-2f : 1e-3f;
        const bnbd_optim_hparams h = bnbref::optim_hparams(beta1, beta2, 1e-8f, lr, wd, step);
        for (int t = 0; t < nt; ++t) {
            OptimCase& c = cs[t];
            c.hg = to_dtype(dtype, optim_grad(rng, c.n, true));
            c.g.upload(c.hg.data());
            if (eight)
                bnbref::optim8_step(rule, dtype, c.hp.data(), c.hg.data(), c.hs1.data(), two ? c.hs2.data() : nullptr,
                                    c.ha1.data(), two ? c.ha2.data() : nullptr, c.n, q1.data(), q2.data(), h);
            else
                bnbref::step32(rule, dtype, c.hp.data(), c.hg.data(), reinterpret_cast<float*>(c.hs1.data()),
                               two ? reinterpret_cast<float*>(c.hs2.data()) : nullptr, c.n, h);
        }
        const int rc = eight ? bnbd_optimizer_8bit_blockwise(rule, dtype, static_cast<bnbd_optim_tensor*>(d_desc.ptr()), nt,
                                                             blocks, static_cast<float*>(d_q1.ptr()),
                                                             static_cast<float*>(d_q2.ptr()), &h, nullptr)
                             : bnbd_optimizer_32bit(rule, dtype, static_cast<bnbd_optim_tensor*>(d_desc.ptr()), nt, blocks,
                                                    &h, nullptr);
        CK(cudaDeviceSynchronize());
        if (rc != 0) {
            report(false, "%s %s: launch returned %d (%s)", rname, dtname(dtype), rc, bnbd_error_string(rc));
            bnbd::g_optim_search_mode = 0;
            return false;
        }
        for (int t = 0; t < nt; ++t) {
            OptimCase& c = cs[t];
            std::vector<uint8_t> p(c.n * es), s1(c.hs1.size()), s2(c.hs2.size());
            std::vector<float> a1(c.ha1.size()), a2(c.ha2.size());
            c.p.download(p.data());
            c.s1.download(s1.data());
            if (two) c.s2.download(s2.data());
            if (eight) {
                c.a1.download(a1.data());
                if (two) c.a2.download(a2.data());
            }
            const int64_t bp = first_mismatch_elems(dtype, p.data(), c.hp.data(), c.n);
            int64_t bs1, bs2 = -1, ba = -1;
            if (eight) {
                bs1 = first_mismatch_bytes(s1.data(), c.hs1.data(), c.n);
                if (two) bs2 = first_mismatch_bytes(s2.data(), c.hs2.data(), c.n);
                for (size_t b = 0; b < a1.size() && ba < 0; ++b)
                    if (!same_f32(a1[b], c.ha1[b]) || (two && !same_f32(a2[b], c.ha2[b]))) ba = int64_t(b);
            } else {
                bs1 = first_mismatch_elems(BNBD_F32, s1.data(), c.hs1.data(), c.n);
                if (two) bs2 = first_mismatch_elems(BNBD_F32, s2.data(), c.hs2.data(), c.n);
            }
            bool guards = true;
            for (DevBuf* b : {&c.p, &c.g, &c.s1, &c.s2, &c.a1, &c.a2})
                if (b->base) guards = guards && b->guards_ok(kGuardByte);
            const bool ok = bp < 0 && bs1 < 0 && bs2 < 0 && ba < 0 && guards;
            report(ok, "%s %s wd=%g %s%s step %d tensor %d (n=%lld%s): param@%lld state1@%lld state2@%lld absmax@%lld guards %s",
                   rname, dtname(dtype), wd, table ? "table" : "plain", mode == 1 ? " no-prefetch" : mode == 3 ? " prefetch" : "", step, t, (long long)c.n,
                   c.misalign ? ", misaligned" : "", (long long)bp, (long long)bs1, (long long)bs2, (long long)ba,
                   guards ? "ok" : "OVERWRITTEN");
            if (!ok) {
                bnbd::g_optim_search_mode = 0;
                return false;
            }
        }
    }
    bnbd::g_optim_search_mode = 0;
    return true;
}

static void test_optimizers(Rng& rng) {
    test_optim_search(rng);
    {  // argument checks
        bnbd_optim_hparams h = bnbref::optim_hparams(0.9f, 0.999f, 1e-8f, 1e-3f, 0.f, 1);
        float* d = nullptr;
        CK(cudaMalloc(&d, 4096));
        report(bnbd_optimizer_8bit_blockwise(9, 0, (bnbd_optim_tensor*)d, 1, 1, d, d, &h, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
               "optim: reject rule");
        report(bnbd_optimizer_8bit_blockwise(BNBD_OPTIM_ADAM, 0, (bnbd_optim_tensor*)d, 1, 1, d, nullptr, &h, nullptr) ==
                   BNBD_ERR_INVALID_ARGUMENT,
               "optim: Adam needs qmap2");
        report(bnbd_optimizer_32bit(BNBD_OPTIM_ADAM, 5, (bnbd_optim_tensor*)d, 1, 1, &h, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
               "optim: reject dtype");
        report(bnbd_optimizer_32bit(7, 0, (bnbd_optim_tensor*)d, 1, 1, &h, nullptr) == BNBD_ERR_INVALID_ARGUMENT,
               "optim: reject 32-bit rule");
        report(bnbd_optimizer_8bit_blockwise(BNBD_OPTIM_LION, 0, (bnbd_optim_tensor*)d, 0, 0, d, nullptr, &h, nullptr) == 0,
               "optim: no tensors");
        CK(cudaFree(d));
    }
    for (int dtype = 0; dtype < 3; ++dtype) {
        for (int rule = BNBD_OPTIM_ADAM; rule <= BNBD_OPTIM_RMSPROP; ++rule) {
            const float wd = (rule + dtype) % 2 ? 0.01f : 0.0f;
            if (run_optim_case(rng, rule, true, dtype, wd, 0, 3)) run_optim_case(rng, rule, true, dtype, 0.01f - wd, 2, 2);
            // both L2-prefetch variants of the table kernel, whichever is the default
            if (run_optim_case(rng, rule, true, dtype, wd, 1, 2)) run_optim_case(rng, rule, true, dtype, 0.01f - wd, 3, 2);
            if (run_optim_case(rng, rule, false, dtype, wd, 0, 3)) run_optim_case(rng, rule, false, dtype, 0.01f - wd, 0, 2);
        }
    }
}

// Timings: 4 f32 tensors of 64M elements (the issue's rows), a 200-tensor mixed model against the same element count
// in 4 tensors, and the plain search for comparison. Bytes: what the update must move (params, grads, states read;
// params and states written).
static void run_optim_benchmarks() {
    const int64_t M = int64_t(64) << 20;
    auto make = [&](const std::vector<int64_t>& sizes, int dtype, bool eight, bool two, std::vector<void*>& owned) {
        std::vector<bnbd_optim_tensor> desc;
        int64_t blocks = 0;
        const size_t es = bnbref::dtype_size(dtype);
        for (int64_t n : sizes) {
            void *p, *g, *s1, *s2 = nullptr;
            float *a1 = nullptr, *a2 = nullptr;
            const int64_t nb = (n + 255) / 256;
            CK(cudaMalloc(&p, n * 4));
            CK(cudaMalloc(&g, n * 4));
            CK(cudaMalloc(&s1, n * (eight ? 1 : 4)));
            if (two) CK(cudaMalloc(&s2, n * (eight ? 1 : 4)));
            if (eight) CK(cudaMalloc(&a1, nb * 4));
            if (eight && two) CK(cudaMalloc(&a2, nb * 4));
            fill_kernel<<<1024, 256>>>(static_cast<float*>(p), n, uint32_t(n));
            fill_kernel<<<1024, 256>>>(static_cast<float*>(g), n, uint32_t(n) + 7u);
            if (dtype == BNBD_BF16) {
                f32_to_bf16_kernel<<<1024, 256>>>(static_cast<float*>(g), static_cast<__nv_bfloat16*>(p), n);
                CK(cudaMemcpy(g, p, n * es, cudaMemcpyDeviceToDevice));
            }
            CK(cudaMemset(s1, eight ? 127 : 0, n * (eight ? 1 : 4)));
            if (two) CK(cudaMemset(s2, 0, n * (eight ? 1 : 4)));
            if (eight) CK(cudaMemset(a1, 0, nb * 4));
            if (eight && two) CK(cudaMemset(a2, 0, nb * 4));
            for (void* q : {p, g, s1, s2, static_cast<void*>(a1), static_cast<void*>(a2)})
                if (q) owned.push_back(q);
            desc.push_back(bnbd_optim_tensor{p, g, s1, s2, a1, a2, n, blocks});
            blocks += nb;
        }
        void* d;
        CK(cudaMalloc(&d, desc.size() * sizeof(bnbd_optim_tensor)));
        CK(cudaMemcpy(d, desc.data(), desc.size() * sizeof(bnbd_optim_tensor), cudaMemcpyHostToDevice));
        owned.push_back(d);
        CK(cudaDeviceSynchronize());
        return std::make_pair(static_cast<bnbd_optim_tensor*>(d), blocks);
    };
    auto release = [](std::vector<void*>& owned) {
        for (void* q : owned) CK(cudaFree(q));
        owned.clear();
    };
    float *q1, *q2;
    CK(cudaMalloc(&q1, 1024));
    CK(cudaMalloc(&q2, 1024));
    CK(cudaMemcpy(q1, bnbref::signed_dynamic_map().data(), 1024, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(q2, bnbref::unsigned_dynamic_map().data(), 1024, cudaMemcpyHostToDevice));
    const std::vector<int64_t> four(4, M);
    struct Row {
        const char* name;
        int rule;
        bool eight;
        int dtype, mode;
        double target;
    };
    const Row rows[] = {
        {"optim adamw8bit f32 4x64M (table search, L2 prefetch)", BNBD_OPTIM_ADAM, true, BNBD_F32, 3, 1.7},
        {"optim adamw8bit f32 4x64M (table search, no prefetch)", BNBD_OPTIM_ADAM, true, BNBD_F32, 1, 1.7},
        {"optim adamw8bit f32 4x64M (plain search)", BNBD_OPTIM_ADAM, true, BNBD_F32, 2, 0},
        {"optim lion8bit f32 4x64M (table search, L2 prefetch)", BNBD_OPTIM_LION, true, BNBD_F32, 3, 1.4},
        {"optim lion8bit f32 4x64M (table search, no prefetch)", BNBD_OPTIM_LION, true, BNBD_F32, 1, 1.4},
        {"optim lion8bit f32 4x64M (plain search)", BNBD_OPTIM_LION, true, BNBD_F32, 2, 0},
        {"optim adamw8bit bf16 4x64M", BNBD_OPTIM_ADAM, true, BNBD_BF16, 0, 0},
        {"optim momentum8bit f32 4x64M", BNBD_OPTIM_MOMENTUM, true, BNBD_F32, 0, 0},
        {"optim rmsprop8bit f32 4x64M", BNBD_OPTIM_RMSPROP, true, BNBD_F32, 0, 0},
        {"optim adamw32bit f32 4x64M", BNBD_OPTIM_ADAM, false, BNBD_F32, 0, 0},
        {"optim lion32bit f32 4x64M", BNBD_OPTIM_LION, false, BNBD_F32, 0, 0},
    };
    for (const Row& r : rows) {
        if (!g_bench_filter.empty() && std::string(r.name).find(g_bench_filter) == std::string::npos) continue;
        const bool eight = r.eight, two = r.rule == BNBD_OPTIM_ADAM;
        std::vector<void*> owned;
        const auto made = make(four, r.dtype, eight, two, owned);
        bnbd_optim_tensor* d = made.first;
        const int64_t blocks = made.second;
        const double es = double(bnbref::dtype_size(r.dtype));
        const double per = eight ? (two ? 3 * es + 4 : 3 * es + 2) : (two ? 3 * es + 16 : 3 * es + 8);
        const bnbd_optim_hparams h = bnbref::optim_hparams(0.9f, 0.999f, 1e-8f, 1e-3f, 0.01f, 5);
        bnbd::g_optim_search_mode = r.mode;
        bench(r.name, per * 4 * M, r.target, [&](int) {
            BCALL(eight ? bnbd_optimizer_8bit_blockwise(r.rule, r.dtype, d, 4, blocks, q1, q2, &h, nullptr)
                        : bnbd_optimizer_32bit(r.rule, r.dtype, d, 4, blocks, &h, nullptr));
        });
        bnbd::g_optim_search_mode = 0;
        release(owned);
    }
    {
        // 200 tensors, log-uniform sizes 1K..16M (fixed seed), against the same element count in 4 tensors
        Rng r(42);
        std::vector<int64_t> sizes;
        int64_t total = 0;
        for (int i = 0; i < 200; ++i) {
            const int64_t n = int64_t(std::exp(std::log(1024.0) + r.uniform() * (std::log(16777216.0) - std::log(1024.0))));
            sizes.push_back(n);
            total += n;
        }
        const bnbd_optim_hparams h = bnbref::optim_hparams(0.9f, 0.999f, 1e-8f, 1e-3f, 0.01f, 5);
        std::vector<void*> owned;
        const auto made = make(sizes, BNBD_F32, true, true, owned);
        bnbd_optim_tensor* d = made.first;
        const int64_t blocks = made.second;
        char name[128];
        std::snprintf(name, sizeof name, "optim adamw8bit f32 200 tensors 1K..16M (%lld elements)", (long long)total);
        bench(name, 16.0 * total, 0, [&](int) {
            BCALL(bnbd_optimizer_8bit_blockwise(BNBD_OPTIM_ADAM, BNBD_F32, d, 200, blocks, q1, q2, &h, nullptr));
        });
        release(owned);
        const auto made4 = make(std::vector<int64_t>(4, total / 4), BNBD_F32, true, true, owned);
        bnbd_optim_tensor* d4 = made4.first;
        const int64_t blocks4 = made4.second;
        std::snprintf(name, sizeof name, "optim adamw8bit f32 same elements in 4 tensors");
        bench(name, 16.0 * (total / 4) * 4, 0, [&](int) {
            BCALL(bnbd_optimizer_8bit_blockwise(BNBD_OPTIM_ADAM, BNBD_F32, d4, 4, blocks4, q1, q2, &h, nullptr));
        });
        release(owned);
    }
    CK(cudaFree(q1));
    CK(cudaFree(q2));
}
