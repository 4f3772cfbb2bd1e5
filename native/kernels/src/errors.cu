// ABI version and error strings.
#include "common.cuh"

extern "C" BNBD_API int bnbd_abi_version(void) { return BNBD_ABI_VERSION; }

extern "C" BNBD_API const char* bnbd_error_string(int code) {
    if (code == 0) return "no error";
    if (code == BNBD_ERR_INVALID_ARGUMENT) return "bnbdist: invalid argument";
    const char* s = cudaGetErrorString(static_cast<cudaError_t>(code));
    return s ? s : "unknown error";
}
