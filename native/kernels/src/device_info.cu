// Per-device launch facts (SM count), cached.
#include <atomic>

#include "common.cuh"

namespace bnbd {

namespace {
constexpr int kMaxDevices = 64;
std::atomic<int> g_sm_count[kMaxDevices];  // 0 = not yet known
std::atomic<int> g_cc_major[kMaxDevices];  // 0 = not yet known
}  // namespace

int cc_major(int* out) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return int(e);
    if (dev >= 0 && dev < kMaxDevices) {
        const int cached = g_cc_major[dev].load(std::memory_order_relaxed);
        if (cached > 0) {
            *out = cached;
            return 0;
        }
    }
    int major = 0;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e != cudaSuccess) return int(e);
    if (dev >= 0 && dev < kMaxDevices) g_cc_major[dev].store(major, std::memory_order_relaxed);
    *out = major;
    return 0;
}

int sm_count(int* out) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return int(e);
    if (dev >= 0 && dev < kMaxDevices) {
        const int cached = g_sm_count[dev].load(std::memory_order_relaxed);
        if (cached > 0) {
            *out = cached;
            return 0;
        }
    }
    int sms = 0;
    e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) return int(e);
    if (sms < 1) sms = 1;
    if (dev >= 0 && dev < kMaxDevices) g_sm_count[dev].store(sms, std::memory_order_relaxed);
    *out = sms;
    return 0;
}

}  // namespace bnbd
