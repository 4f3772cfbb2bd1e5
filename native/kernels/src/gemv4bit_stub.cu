// Stand-in for gemv4bit.cu when the library is built with -DBNBD_GEMV=OFF (build.sh does so only when the full build
// failed, so that the other kernels stay usable): bnbd_gemv_4bit reports an invalid argument for every call.
#include "common.cuh"

namespace bnbd {
int g_gemv_rows = 0;
}  // namespace bnbd

extern "C" BNBD_API int bnbd_gemv_4bit(int, int, const void*, const uint8_t*, const float*, const uint8_t*, const float*,
                                       const float*, const float*, int, void*, int64_t, int64_t, int, void*) {
    return BNBD_ERR_INVALID_ARGUMENT;
}
