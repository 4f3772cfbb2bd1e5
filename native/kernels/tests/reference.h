// Host reference implementation of the numerical contract in include/bnbdist_kernels.h.
// Straightforward loops that mirror the contract literally; used by tests/selftest.cu.
// Compile the including translation unit WITHOUT fast-math and with -ffp-contract=off, so that every
// f32 operation written here rounds exactly once (x86-64 SSE arithmetic is IEEE binary32).
#ifndef BNBDIST_TESTS_REFERENCE_H
#define BNBDIST_TESTS_REFERENCE_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace bnbref {

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// ---------------------------------------------------------------------------------------------
// Code books (bitsandbytes-0.50 notes, sections 3.1-3.3 and 5.1).

// create_dynamic_map(signed=True): f32 bit patterns of indices 128..255.
static const uint32_t kSignedDynamicHi[128] = {
    0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu,
    0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du,
    0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u,
    0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u,
    0x3c68f5c3u, 0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u,
    0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu, 0x3d670a3du,
    0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au,
    0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u,
    0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu,
    0x3e6f3333u, 0x3e7d9999u, 0x3e860000u, 0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u,
    0x3eb13333u, 0x3eb86666u, 0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au,
    0x3eeaccccu, 0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au,
    0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu, 0x3f2b6666u,
    0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u, 0x3f44999au, 0x3f483333u,
    0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u, 0x3f5dcccdu, 0x3f616666u, 0x3f650000u,
    0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u, 0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u,
};

// create_dynamic_map(signed=False): f32 bit patterns of indices 0..255.
static const uint32_t kUnsignedDynamic[256] = {
    0x00000000u, 0x34ae7baau, 0x35500998u, 0x360e9b38u, 0x3692ccf6u, 0x36de4c51u, 0x3714e5d5u, 0x3783126eu,
    0x37e171a0u, 0x381fe868u, 0x384f1800u, 0x387e479au, 0x3896bb99u, 0x38ae5364u, 0x38c5eb31u, 0x3906594bu,
    0x394154cau, 0x397c5049u, 0x399ba5e4u, 0x39b923a2u, 0x39d6a163u, 0x39f41f22u, 0x3a08ce71u, 0x3a178d50u,
    0x3a264c30u, 0x3a350b10u, 0x3a43c9efu, 0x3a5288d0u, 0x3a6147afu, 0x3a70068eu, 0x3a7ec56eu, 0x3a958106u,
    0x3aba5e35u, 0x3adf3b64u, 0x3b020c4au, 0x3b147ae1u, 0x3b26e978u, 0x3b395810u, 0x3b4bc6a7u, 0x3b5e3540u,
    0x3b70a3d7u, 0x3b818937u, 0x3b8ac082u, 0x3b93f7cfu, 0x3b9d2f1au, 0x3ba66666u, 0x3baf9db2u, 0x3bb8d4fdu,
    0x3bc20c4au, 0x3bcb4395u, 0x3bd47ae1u, 0x3bddb22eu, 0x3be6e978u, 0x3bf020c5u, 0x3bf9580fu, 0x3c0147aeu,
    0x3c05e354u, 0x3c0a7ef9u, 0x3c0f1aa0u, 0x3c13b645u, 0x3c1851ebu, 0x3c1ced92u, 0x3c218937u, 0x3c2f5c2au,
    0x3c466667u, 0x3c5d70a3u, 0x3c747ae2u, 0x3c85c28fu, 0x3c9147afu, 0x3c9ccccdu, 0x3ca851ebu, 0x3cb3d70bu,
    0x3cbf5c29u, 0x3ccae147u, 0x3cd66667u, 0x3ce1eb87u, 0x3ced70a3u, 0x3cf8f5c3u, 0x3d023d70u, 0x3d080000u,
    0x3d0dc28fu, 0x3d13851fu, 0x3d1947afu, 0x3d1f0a3du, 0x3d24cccdu, 0x3d2a8f5cu, 0x3d3051ebu, 0x3d36147bu,
    0x3d3bd70au, 0x3d41999au, 0x3d475c28u, 0x3d4d1eb8u, 0x3d52e147u, 0x3d58a3d7u, 0x3d5e6667u, 0x3d6428f7u,
    0x3d69eb87u, 0x3d6fae15u, 0x3d7570a3u, 0x3d7b3333u, 0x3d807ae2u, 0x3d835c2au, 0x3d863d71u, 0x3d891eb8u,
    0x3d8c0000u, 0x3d8ee148u, 0x3d91c290u, 0x3d94a3d7u, 0x3d97851fu, 0x3d9a6667u, 0x3d9d47afu, 0x3da028f6u,
    0x3da30a3eu, 0x3da5eb85u, 0x3da8cccdu, 0x3dabae15u, 0x3dae8f5cu, 0x3db170a4u, 0x3db451ebu, 0x3db73333u,
    0x3dba147bu, 0x3dbcf5c3u, 0x3dbfd70bu, 0x3dc2b852u, 0x3dc5999au, 0x3dc87ae2u, 0x3dcb5c29u, 0x3dd40000u,
    0x3de26666u, 0x3df0cccdu, 0x3dff3333u, 0x3e06ccccu, 0x3e0e0000u, 0x3e153334u, 0x3e1c6666u, 0x3e23999au,
    0x3e2accccu, 0x3e320000u, 0x3e393334u, 0x3e406666u, 0x3e47999au, 0x3e4eccccu, 0x3e560000u, 0x3e5d3334u,
    0x3e646666u, 0x3e6b999au, 0x3e72ccccu, 0x3e7a0000u, 0x3e809999u, 0x3e843333u, 0x3e87cccdu, 0x3e8b6666u,
    0x3e8f0000u, 0x3e92999au, 0x3e963333u, 0x3e99ccccu, 0x3e9d6666u, 0x3ea10000u, 0x3ea4999au, 0x3ea83333u,
    0x3eabccccu, 0x3eaf6666u, 0x3eb30000u, 0x3eb6999au, 0x3eba3333u, 0x3ebdccccu, 0x3ec16666u, 0x3ec50000u,
    0x3ec8999au, 0x3ecc3333u, 0x3ecfccccu, 0x3ed36666u, 0x3ed70000u, 0x3eda999au, 0x3ede3333u, 0x3ee1ccccu,
    0x3ee56666u, 0x3ee90000u, 0x3eec999au, 0x3ef03333u, 0x3ef3ccccu, 0x3ef76666u, 0x3efb0000u, 0x3efe9999u,
    0x3f01199au, 0x3f02e666u, 0x3f04b333u, 0x3f068000u, 0x3f084cccu, 0x3f0a199au, 0x3f0be666u, 0x3f0db334u,
    0x3f0f8000u, 0x3f114ccdu, 0x3f13199au, 0x3f14e666u, 0x3f16b334u, 0x3f188000u, 0x3f1a4ccdu, 0x3f1c199au,
    0x3f1de666u, 0x3f1fb334u, 0x3f218000u, 0x3f234ccdu, 0x3f25199au, 0x3f26e666u, 0x3f28b334u, 0x3f2a8000u,
    0x3f2c4ccdu, 0x3f2e199au, 0x3f2fe666u, 0x3f31b334u, 0x3f338000u, 0x3f354ccdu, 0x3f37199au, 0x3f38e666u,
    0x3f3ab334u, 0x3f3c8000u, 0x3f3e4ccdu, 0x3f40199au, 0x3f41e666u, 0x3f43b334u, 0x3f458000u, 0x3f474cccu,
    0x3f49199au, 0x3f4ae666u, 0x3f4cb334u, 0x3f4e8000u, 0x3f504cccu, 0x3f52199au, 0x3f53e666u, 0x3f55b334u,
    0x3f578000u, 0x3f594cccu, 0x3f5b199au, 0x3f5ce666u, 0x3f5eb334u, 0x3f608000u, 0x3f624cccu, 0x3f64199au,
    0x3f65e666u, 0x3f67b334u, 0x3f698000u, 0x3f6b4cccu, 0x3f6d199au, 0x3f6ee666u, 0x3f70b334u, 0x3f728000u,
    0x3f744cccu, 0x3f76199au, 0x3f77e666u, 0x3f79b334u, 0x3f7b8000u, 0x3f7d4cccu, 0x3f7f199au, 0x3f800000u,
};

// Index i < 127 is the negation of index 254 - i; index 127 is 0.
inline std::vector<float> signed_dynamic_map() {
    std::vector<float> c(256);
    for (int i = 128; i < 256; ++i) c[i] = bits_to_float(kSignedDynamicHi[i - 128]);
    c[127] = 0.0f;
    for (int i = 0; i < 127; ++i) c[i] = -c[254 - i];
    return c;
}

inline std::vector<float> unsigned_dynamic_map() {
    std::vector<float> c(256);
    for (int i = 0; i < 256; ++i) c[i] = bits_to_float(kUnsignedDynamic[i]);
    return c;
}

// NF4 code book (index = 4-bit code).
static const float kNF4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// FP4 dequant table (index = bit pattern); index 8 is -0.0 (bitsandbytes' CUDA LUT computes 0 * -1).
static const float kFP4[16] = {
    0.0f, 0.0052083335f, 0.6666667f, 1.0f, 0.33333334f, 0.5f, 0.16666667f, 0.25f,
    -0.0f, -0.0052083335f, -0.6666667f, -1.0f, -0.33333334f, -0.5f, -0.16666667f, -0.25f};

// The 15 NF4 thresholds (midpoints of the NF4 table), rounded to f32.
static const float kNF4Thresholds[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

// ---------------------------------------------------------------------------------------------
// dtypes: 0 = f32, 1 = bf16, 2 = f16. Upcasts are exact; downcasts round to nearest even.

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
    uint32_t u = float_to_bits(f);
    if (std::isnan(f)) return uint16_t((u >> 16) | 0x0040u);  // some quiet NaN (tests compare NaN as NaN)
    uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
    return uint16_t((u + rounding) >> 16);  // carries into the exponent give inf correctly
}

inline float half_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | (man << 13));
    if (exp == 0) {
        // zero or subnormal: man * 2^-24, exact in f32
        float v = float(man) * bits_to_float(0x33800000u);  // 2^-24
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t float_to_half(float f) {
    uint32_t u = float_to_bits(f);
    uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u);  // NaN (tests compare NaN as NaN)
    if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 rounds to inf
    uint32_t exp = a >> 23;
    if (exp >= 113) {  // normal half: exponent (exp - 112) in 1..30
        uint32_t mant = a & 0x7FFFFFu;
        uint32_t h = ((exp - 112u) << 10) | (mant >> 13);
        uint32_t rem = mant & 0x1FFFu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h += 1;  // may carry into exponent: fine
        return uint16_t(sign | h);
    }
    // subnormal half (or zero): value = a / 2^-24 units, round to nearest even
    if (exp < 102) return sign;  // below 2^-25: rounds to zero (2^-25 itself is a tie, handled below)
    uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;  // 24-bit significand, value = mant * 2^(exp-150)
    uint32_t shift = 126u - exp;                  // units of 2^-24: value / 2^-24 = mant * 2^(exp-126)
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) q += 1;
    return uint16_t(sign | q);
}

inline size_t dtype_size(int dtype) { return dtype == 0 ? 4 : 2; }

inline float load_elem(int dtype, const void* p, int64_t i) {
    if (dtype == 0) return static_cast<const float*>(p)[i];
    uint16_t h = static_cast<const uint16_t*>(p)[i];
    return dtype == 1 ? bf16_to_float(h) : half_to_float(h);
}

inline void store_elem(int dtype, void* p, int64_t i, float v) {
    if (dtype == 0) static_cast<float*>(p)[i] = v;
    else if (dtype == 1) static_cast<uint16_t*>(p)[i] = float_to_bf16(v);
    else static_cast<uint16_t*>(p)[i] = float_to_half(v);
}

// ---------------------------------------------------------------------------------------------
// Contract pieces.

// max |x| ignoring NaN (fmaxf semantics); 0 for an empty or all-zero block.
inline float block_absmax(const std::vector<float>& x, int64_t lo, int64_t hi) {
    float m = 0.0f;
    for (int64_t i = lo; i < hi; ++i) m = std::fmax(m, std::fabs(x[i]));
    return m;
}

// 8-bit nearest code by f32 midpoints; an exact midpoint goes to the even index of (j, j+1).
// With repeated midpoints the lowest j with xn == mid[j] decides. NaN gives 0.
inline int search8(const float* code, float xn) {
    float mid[255];
    for (int j = 0; j < 255; ++j) {
        float s = code[j] + code[j + 1];
        mid[j] = s * 0.5f;
    }
    for (int j = 0; j < 255; ++j)
        if (xn == mid[j]) return (j % 2 == 0) ? j : j + 1;
    int idx = 0;
    for (int j = 0; j < 255; ++j)
        if (xn > mid[j]) ++idx;
    return idx;
}

inline int nf4_code(float xn) {
    int c = 0;
    for (int i = 0; i < 15; ++i)
        if (xn > kNF4Thresholds[i]) ++c;
    return c;
}

inline int fp4_code(float xn) {
    int sign = xn < 0.0f ? 8 : 0;
    float a = std::fabs(xn);
    int c;
    if (a > 0.8333333f) c = 3;
    else if (a > 0.583333f) c = 2;
    else if (a > 0.4166667f) c = 5;
    else if (a > 0.29166667f) c = 4;
    else if (a > 0.20833333f) c = 7;
    else if (a > 0.0859375f) c = 6;
    else if (a > 0.00260417f) c = 1;
    else c = 0;
    return sign | c;
}

inline std::vector<float> upcast(int dtype, const void* A, int64_t n) {
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) x[i] = load_elem(dtype, A, i);
    return x;
}

// bnbd_quantize_blockwise. sub_offset may be null.
inline void quantize_blockwise(int dtype, const float* code, const void* A, const float* sub_offset,
                               float* absmax, uint8_t* out, int64_t n, int bs) {
    std::vector<float> x = upcast(dtype, A, n);
    if (sub_offset)
        for (int64_t i = 0; i < n; ++i) x[i] = x[i] - *sub_offset;
    int64_t nb = (n + bs - 1) / bs;
    for (int64_t b = 0; b < nb; ++b) {
        int64_t lo = b * bs, hi = std::min<int64_t>(n, lo + bs);
        float am = block_absmax(x, lo, hi);
        absmax[b] = am;
        float inv = 1.0f / am;
        for (int64_t i = lo; i < hi; ++i) {
            float xn = x[i] * inv;
            out[i] = uint8_t(search8(code, xn));
        }
    }
}

inline void dequantize_blockwise(int dtype, const float* code, const uint8_t* A, const float* absmax, void* out,
                                 int64_t n, int bs) {
    for (int64_t i = 0; i < n; ++i) {
        float v = code[A[i]] * absmax[i / bs];
        store_elem(dtype, out, i, v);
    }
}

inline void quantize_4bit(int dtype, int quant_type, const void* A, float* absmax, uint8_t* out, int64_t n,
                          int bs) {
    std::vector<float> x = upcast(dtype, A, n);
    int64_t nb = (n + bs - 1) / bs;
    std::vector<uint8_t> codes(n + 1);
    for (int64_t b = 0; b < nb; ++b) {
        int64_t lo = b * bs, hi = std::min<int64_t>(n, lo + bs);
        float am = block_absmax(x, lo, hi);
        absmax[b] = am;
        float inv = 1.0f / am;
        for (int64_t i = lo; i < hi; ++i) {
            float xn = x[i] * inv;
            codes[i] = uint8_t(quant_type == 1 ? nf4_code(xn) : fp4_code(xn));
        }
    }
    codes[n] = uint8_t(quant_type == 1 ? nf4_code(0.0f) : fp4_code(0.0f));  // pad for odd n (NF4 7, FP4 0)
    for (int64_t j = 0; j < (n + 1) / 2; ++j) out[j] = uint8_t((codes[2 * j] << 4) | codes[2 * j + 1]);
}

// Nested absmax of block b: ((nested_code[q[b]] * nested_absmax[b / nbs]) RN + offset) RN.
inline float nested_absmax_value(const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                                 float offset, int nbs, int64_t b) {
    float p = nested_code[qabsmax[b]] * nested_absmax[b / nbs];
    float a = p + offset;
    return a;
}

inline void dequantize_4bit(int dtype, int quant_type, const uint8_t* A, const float* absmax,
                            const uint8_t* qabsmax, const float* nested_absmax, const float* nested_code,
                            const float* offset, int nested_bs, void* out, int64_t n, int bs) {
    const float* table = quant_type == 1 ? kNF4 : kFP4;
    for (int64_t i = 0; i < n; ++i) {
        int64_t b = i / bs;
        float am = absmax ? absmax[b]
                          : nested_absmax_value(qabsmax, nested_absmax, nested_code, *offset, nested_bs, b);
        uint8_t byte = A[i / 2];
        int c = (i % 2 == 0) ? (byte >> 4) : (byte & 15);
        float v = table[c] * am;
        store_elem(dtype, out, i, v);
    }
}

inline float mean_f32(const float* x, int64_t n) {
    if (n == 0) return 0.0f;
    double S = 0.0;
    for (int64_t c = 0; c * 1024 < n; ++c) {
        double s[1024];
        for (int i = 0; i < 1024; ++i) {
            int64_t k = c * 1024 + i;
            s[i] = k < n ? double(x[k]) : 0.0;
        }
        for (int stride = 512; stride >= 1; stride /= 2)
            for (int i = 0; i < stride; ++i) s[i] += s[i + stride];
        S += s[0];
    }
    float sum = float(S);            // f64 -> f32, RN
    float factor = 1.0f / float(n);  // int64 -> f32 (RN), then the f32 reciprocal (RN)
    return sum * factor;
}

// round-half-even to int (default rounding mode FE_TONEAREST)
inline int round_half_even(float v) { return int(std::nearbyint(v)); }

// q = round-half-even(RN(x * scale)) saturated to [-127, 127]; NaN products and outliers give 0.
inline void int8_vectorwise_quant(int dtype, const void* A, int8_t* out, float* row_stats, int64_t rows,
                                  int64_t cols, float threshold) {
    const bool thr_on = threshold > 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
        float m = 0.0f;
        for (int64_t c = 0; c < cols; ++c) {
            float a = std::fabs(load_elem(dtype, A, r * cols + c));
            if (thr_on && !(a < threshold)) continue;
            m = std::fmax(m, a);
        }
        row_stats[r] = m;
        float scale = 127.0f / m;
        for (int64_t c = 0; c < cols; ++c) {
            float x = load_elem(dtype, A, r * cols + c);
            float p = x * scale;
            int q;
            if (thr_on && std::fabs(x) >= threshold) q = 0;
            else if (std::isnan(p)) q = 0;
            else if (p > 127.0f) q = 127;
            else if (p < -127.0f) q = -127;
            else q = round_half_even(p);
            out[r * cols + c] = int8_t(q);
        }
    }
}

}  // namespace bnbref
#endif
