// Host reference of the optimizer updates: a line-by-line C++ transcription of the C# CPU kernels
// (src/Optim8bit/Kernels as of the optim branch's commit a151651: Adam8bitBlockwise, OneState8bitBlockwise,
// TwoState32bit, OneState32bit, StateQuantizer, ParamRounding). Compiled with
// -ffp-contract=off, so every operation rounds once except the explicit std::fma, exactly like the C# code.
// Parameters of bf16/f16 are upcast, rounded to their dtype where the C# kernels round (TRound) and stored.
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

// StateQuantizer.Signed (the step direction x > 0 ? +1 : -1 wraps on the byte, as in bitsandbytes)
inline uint8_t signed_state_code(float x, float absmax, const float* code, const float* mids) {
    int c = nearest_upper(x / absmax, mids);
    if (std::signbit(code[c]) != std::signbit(x)) c += x > 0.0f ? 1 : -1;
    return uint8_t(c & 0xFF);
}

// A NaN state as the GPU makes it (canonical 0x7FFFFFFF; x86 makes 0xFFC00000 for 0 * inf and the like). Only its sign
// matters here: the sign fix reads it, so a NaN state's code depends on the platform's NaN (the contract leaves it open).
inline float gpu_nan(float x) { return x != x ? bits_to_float(0x7FFFFFFFu) : x; }

// StateQuantizer.MaxAbs (fmaxf: NaN ignored) and StoredAbsmax (inf -> FLT_MAX)
inline float max_abs(float max, float x) {
    const float a = std::fabs(x);
    return a > max ? a : max;
}
inline float stored_absmax(float m) { return std::isinf(m) && m > 0 ? 3.40282347e38f : m; }

// ParamRounding: round to the parameter dtype and widen back
inline float rnd(int dtype, float x) {
    if (dtype == BNBD_BF16) return bf16_to_float(float_to_bf16(x));
    if (dtype == BNBD_F16) return half_to_float(float_to_half(x));
    return x;
}

// OneState8bitBlockwise.Sgn
inline float sgn(float x) { return (0.0f < x ? 1.0f : 0.0f) - (x < 0.0f ? 1.0f : 0.0f); }

// One step on one tensor (8-bit blockwise, any rule), in place: Adam8bitBlockwise.Step<TRound> /
// OneState8bitBlockwise.Step<TRound> with the parameter loaded from and stored to its dtype.
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
            if (rule == BNBD_OPTIM_ADAM) {
                if (!std::isfinite(g)) {
                    m[k] = 0.0f;
                    v[k] = 0.0f;
                    continue;
                }
                const float mk = std::fma(q1[s1[i]] * a1[b], h.beta1, (1.0f - h.beta1) * g);
                const float vk = std::fma(q2[s2[i]] * a2[b], h.beta2, (1.0f - h.beta2) * g * g);
                m[k] = gpu_nan(mk);
                v[k] = gpu_nan(vk);
                max1 = max_abs(max1, mk);
                max2 = max_abs(max2, vk);
                const float denom = std::fma(h.correction2, h.eps, std::sqrt(vk));
                const float q = rnd(dtype, std::fma(h.step_size, mk / denom, p));
                store_elem(dtype, param, i, h.weight_decay > 0.0f ? rnd(dtype, q * h.decay) : q);
                continue;
            }
            const float old = q1[s1[i]] * a1[b];
            float sk;
            if (rule == BNBD_OPTIM_MOMENTUM) {
                if (h.weight_decay > 0.0f) g = std::fma(h.weight_decay, p, g);
                sk = h.step == 1 ? g : std::fma(old, h.beta1, g);
                p = rnd(dtype, std::fma(-h.lr, sk, p));
            } else if (rule == BNBD_OPTIM_LION) {
                if (h.weight_decay > 0.0f) p = rnd(dtype, p * h.decay);
                const float update = rnd(dtype, h.lr * sgn(std::fma(old, h.beta1, (1.0f - h.beta1) * g)));
                sk = std::fma(old, h.beta2, (1.0f - h.beta2) * g);
                p = rnd(dtype, p - update);
            } else {
                const float raw = g;
                if (h.weight_decay > 0.0f) g = std::fma(h.weight_decay, p, g);
                sk = std::fma(old, h.beta1, (1.0f - h.beta1) * (g * g));
                p = rnd(dtype, std::fma(-h.lr, raw / (std::sqrt(sk) + h.eps), p));
            }
            store_elem(dtype, param, i, p);
            m[k] = gpu_nan(sk);
            max1 = max_abs(max1, sk);
        }
        max1 = stored_absmax(max1);
        max2 = stored_absmax(max2);
        a1[b] = max1;
        if (rule == BNBD_OPTIM_ADAM) a2[b] = max2;
        for (int k = 0; k < len; ++k) {
            s1[start + k] = signed_state_code(m[k], max1, q1, mids1);
            if (rule == BNBD_OPTIM_ADAM) s2[start + k] = uint8_t(nearest_upper(v[k] / max2, mids2));
        }
    }
}

// TwoState32bit.Step<TRound> (rule Adam) and OneState32bit.Step<TRound> (the 1-state rules) on one tensor, in place.
inline void step32(int rule, int dtype, void* param, const void* grad, float* s1, float* s2, int64_t n,
                   const bnbd_optim_hparams& h) {
    for (int64_t i = 0; i < n; ++i) {
        float g = load_elem(dtype, grad, i);
        float p = load_elem(dtype, param, i);
        if (rule == BNBD_OPTIM_ADAM) {
            const float mi = std::fma(s1[i], h.beta1, (1.0f - h.beta1) * g);
            const float vi = std::fma(s2[i], h.beta2, (1.0f - h.beta2) * g * g);
            s1[i] = mi;
            s2[i] = vi;
            p = rnd(dtype, std::fma(h.step_size, mi / std::fma(h.eps, h.correction2, std::sqrt(vi)), p));
            store_elem(dtype, param, i, h.weight_decay > 0.0f ? rnd(dtype, p * h.decay) : p);
            continue;
        }
        float s = s1[i];
        if (h.weight_decay > 0.0f && rule != BNBD_OPTIM_LION) g = rnd(dtype, std::fma(p, h.weight_decay, g));
        if (rule == BNBD_OPTIM_MOMENTUM) {
            s = h.step == 1 ? g : std::fma(s, h.beta1, g);
            p = rnd(dtype, p + (-h.lr * s));
        } else if (rule == BNBD_OPTIM_LION) {
            p = rnd(dtype, std::fma(p, h.decay, -h.lr * sgn(std::fma(s, h.beta1, (1.0f - h.beta1) * g))));
            s = std::fma(s, h.beta2, (1.0f - h.beta2) * g);
        } else {
            s = std::fma(s, h.beta1, (1.0f - h.beta1) * g * g);
            p = rnd(dtype, p - (h.lr * (g / (std::sqrt(s) + h.eps))));
        }
        store_elem(dtype, param, i, p);
        s1[i] = s;
    }
}

}  // namespace bnbref

#endif
