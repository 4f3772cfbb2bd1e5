// Fixed 4-bit code books of the numerical contract (bitsandbytes 0.50: NF4 / FP4 tables and thresholds).
// `static __constant__`: each translation unit gets its own copy (no relocatable device code needed).
#ifndef BNBDIST_SRC_CODEBOOKS_CUH
#define BNBDIST_SRC_CODEBOOKS_CUH

namespace bnbd {

// The 15 NF4 thresholds (midpoints of the NF4 table), as f32: NF4 code = #{i : xn > bnbd_nf4_thresholds[i]}.
static __constant__ float bnbd_nf4_thresholds[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

// FP4 magnitude thresholds, ascending (strict >): 0.00260417 -> 1, 0.0859375 -> 6, 0.20833333 -> 7,
// 0.29166667 -> 4, 0.4166667 -> 5, 0.583333 -> 2, 0.8333333 -> 3.
static __constant__ float bnbd_fp4_thresholds[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                                     0.4166667f,  0.583333f,  0.8333333f};

// Dequantization tables (index = 4-bit code). FP4 index 8 is -0.0 (bitsandbytes' CUDA LUT computes 0 * -1).
static __constant__ float bnbd_nf4_table[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

static __constant__ float bnbd_fp4_table[16] = {
    0.0f,  0.0052083335f,  0.6666667f,  1.0f,  0.33333334f,  0.5f,  0.16666667f,  0.25f,
    -0.0f, -0.0052083335f, -0.6666667f, -1.0f, -0.33333334f, -0.5f, -0.16666667f, -0.25f};

}  // namespace bnbd

#endif
