// Host reference of the optimizer updates: a line-by-line C++ transcription of the C# CPU kernels
// (src/Optim8bit/Kernels: Adam8bitBlockwise, OneState8bitBlockwise, Adam32bit, StateQuantizer). Compiled with
// -ffp-contract=off, so every operation rounds once except the explicit std::fma, exactly like the C# code.
// Parameters of bf16/f16 are upcast, updated in f32 and stored with RN (reference.h's store_elem).
#ifndef BNBDIST_TESTS_OPTIM_REFERENCE_H
#define BNBDIST_TESTS_OPTIM_REFERENCE_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "bnbdist_kernels.h"
#include "reference.h"

namespace bnbref {

// The host-side scalars, as the C# wrapper computes them (MathF.Pow / MathF.Sqrt / FusedMultiplyAdd).
inline bnbd_optim_hparams optim_hparams(float beta1, float beta2, float eps, float lr, float wd, int step) {
    bnbd_optim_hparams h{};
    h.beta1 = beta1;
    h.beta2 = beta2;
    h.eps = eps;
    h.lr = lr;
    h.weight_decay = wd;
    const float correction1 = 1.0f - std::pow(beta1, float(step));
    h.correction2 = std::sqrt(1.0f - std::pow(beta2, float(step)));
    h.step_size = -lr * h.correction2 / correction1;
    h.decay = std::fma(-lr, wd, 1.0f);
    h.step = step;
    return h;
}

inline void state_midpoints(const float* code, float* mids) {
    for (int j = 0; j < 255; ++j) mids[j] = (code[j] + code[j + 1]) * 0.5f;
}

// StateQuantizer.NearestUpper
inline int nearest_upper(float x, const float* mids) {
    if (x != x) return 0;
    int lo = 0, hi = 255;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (mids[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// StateQuantizer.Signed
inline uint8_t signed_state_code(float x, float absmax, const float* code, const float* mids) {
    int c = nearest_upper(x / absmax, mids);
    if (std::signbit(code[c]) != std::signbit(x)) c += std::signbit(x) ? -1 : 1;
    return uint8_t(c);
}

// A NaN state as the GPU makes it (canonical 0x7FFFFFFF; x86 makes 0xFFC00000 for 0 * inf and the like). Only its sign
// matters here: the sign fix reads it, so a NaN state's code depends on the platform's NaN (the contract leaves it open).
inline float gpu_nan(float x) { return x != x ? bits_to_float(0x7FFFFFFFu) : x; }

// MathF.Max(a, b) for a, b >= +0 or NaN
inline float max_nan(float a, float b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }

// One step on one tensor (8-bit blockwise, any rule), in place.
inline void optim8_step(int rule, int dtype, void* param, const void* grad, uint8_t* s1, uint8_t* s2, float* a1,
                        float* a2, int64_t n, const float* q1, const float* q2, const bnbd_optim_hparams& h) {
    float mids1[255], mids2[255];
    state_midpoints(q1, mids1);
    if (rule == BNBD_OPTIM_ADAM) state_midpoints(q2, mids2);
    std::vector<float> m(256), v(256);
    for (int64_t start = 0; start < n; start += 256) {
        const int len = int(std::min<int64_t>(256, n - start));
        const int64_t b = start / 256;
        float max1 = 0.0f, max2 = 0.0f;
        for (int k = 0; k < len; ++k) {
            const int64_t i = start + k;
            float g = load_elem(dtype, grad, i);
            float p = load_elem(dtype, param, i);
            const float old = q1[s1[i]] * a1[b];
            if (rule == BNBD_OPTIM_ADAM) {
                if (!std::isfinite(g)) {
                    m[k] = 0.0f;
                    v[k] = 0.0f;
                    continue;
                }
                const float mk = std::fma(old, h.beta1, (1.0f - h.beta1) * g);
                const float vk = std::fma(q2[s2[i]] * a2[b], h.beta2, (1.0f - h.beta2) * g * g);
                m[k] = gpu_nan(mk);
                v[k] = gpu_nan(vk);
                max1 = max_nan(max1, std::fabs(mk));
                max2 = max_nan(max2, std::fabs(vk));
                const float denom = std::fma(h.correction2, h.eps, std::sqrt(vk));
                const float q = std::fma(h.step_size, mk / denom, p);
                store_elem(dtype, param, i, h.weight_decay > 0.0f ? q * h.decay : q);
                continue;
            }
            float sk;
            if (rule == BNBD_OPTIM_MOMENTUM) {
                if (h.weight_decay > 0.0f) g = std::fma(h.weight_decay, p, g);
                sk = h.step == 1 ? g : std::fma(old, h.beta1, g);
                p = std::fma(-h.lr, sk, p);
            } else if (rule == BNBD_OPTIM_LION) {
                if (h.weight_decay > 0.0f) p *= h.decay;
                const float d = std::fma(old, h.beta1, (1.0f - h.beta1) * g);
                const float sgn = d > 0.0f ? 1.0f : d < 0.0f ? -1.0f : (d != d ? d : 0.0f);
                p -= h.lr * sgn;
                sk = std::fma(old, h.beta2, (1.0f - h.beta2) * g);
            } else {
                if (h.weight_decay > 0.0f) g = std::fma(h.weight_decay, p, g);
                sk = std::fma(old, h.beta1, (1.0f - h.beta1) * g * g);
                p = std::fma(-h.lr, g / (std::sqrt(sk) + h.eps), p);
            }
            store_elem(dtype, param, i, p);
            m[k] = gpu_nan(sk);
            max1 = max_nan(max1, std::fabs(sk));
        }
        a1[b] = max1;
        if (rule == BNBD_OPTIM_ADAM) a2[b] = max2;
        for (int k = 0; k < len; ++k) {
            s1[start + k] = signed_state_code(m[k], max1, q1, mids1);
            if (rule == BNBD_OPTIM_ADAM) s2[start + k] = uint8_t(nearest_upper(v[k] / max2, mids2));
        }
    }
}

// Adam32bit.Step on one tensor, in place.
inline void adam32_step(int dtype, void* param, const void* grad, float* m, float* v, int64_t n, const bnbd_optim_hparams& h) {
    for (int64_t i = 0; i < n; ++i) {
        const float g = load_elem(dtype, grad, i);
        const float mi = std::fma(m[i], h.beta1, (1.0f - h.beta1) * g);
        const float vi = std::fma(v[i], h.beta2, (1.0f - h.beta2) * g * g);
        m[i] = mi;
        v[i] = vi;
        const float p = std::fma(h.step_size, mi / std::fma(h.eps, h.correction2, std::sqrt(vi)), load_elem(dtype, param, i));
        store_elem(dtype, param, i, h.weight_decay > 0.0f ? p * h.decay : p);
    }
}

}  // namespace bnbref

#endif
