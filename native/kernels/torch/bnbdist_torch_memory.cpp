// libbnbdist_torch_memory.so: PyTorch's CUDA caching-allocator statistics for processes that use libtorch through
// TorchSharp (which has no torch.cuda.memory_stats / reset_peak_memory_stats / empty_cache). Built by
// native/kernels/build.sh when a Python with torch is found, against that torch's headers and libc10_cuda.so, with
// torch's _GLIBCXX_USE_CXX11_ABI. It must be the libc10_cuda.so the process already loaded (same torch/lib), since the
// statistics live in that library's allocator instance.
//
// C ABI: every function returns 0 on success; otherwise bnbd_torch_last_error() has the text (thread-local).
#include <c10/cuda/CUDACachingAllocator.h>

#include <cstdint>
#include <cstring>
#include <exception>

#define BNBD_TORCH_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
thread_local char last_error[1024] = "";

int fail(const char* what) {
  std::strncpy(last_error, what, sizeof(last_error) - 1);
  last_error[sizeof(last_error) - 1] = '\0';
  return 1;
}
}  // namespace

BNBD_TORCH_EXPORT int bnbd_torch_memory_abi_version() { return 1; }

BNBD_TORCH_EXPORT const char* bnbd_torch_last_error() { return last_error; }

// out[0..5]: allocated bytes current, peak; reserved (segments) bytes current, peak; active bytes current, peak.
// Index 0 of each stat array is the aggregate over small and large pools (StatType::AGGREGATE).
BNBD_TORCH_EXPORT int bnbd_torch_cuda_memory_stats(int device, int64_t* out) {
  try {
    auto* allocator = c10::cuda::CUDACachingAllocator::get();
    if (allocator == nullptr) return fail("no CUDA caching allocator is registered (is libtorch_cuda loaded?)");
    const auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = stats.allocated_bytes[0].current;
    out[1] = stats.allocated_bytes[0].peak;
    out[2] = stats.reserved_bytes[0].current;
    out[3] = stats.reserved_bytes[0].peak;
    out[4] = stats.active_bytes[0].current;
    out[5] = stats.active_bytes[0].peak;
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown C++ exception");
  }
}

BNBD_TORCH_EXPORT int bnbd_torch_cuda_reset_peak_memory_stats(int device) {
  try {
    auto* allocator = c10::cuda::CUDACachingAllocator::get();
    if (allocator == nullptr) return fail("no CUDA caching allocator is registered (is libtorch_cuda loaded?)");
    allocator->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown C++ exception");
  }
}

BNBD_TORCH_EXPORT int bnbd_torch_cuda_empty_cache() {
  try {
    auto* allocator = c10::cuda::CUDACachingAllocator::get();
    if (allocator == nullptr) return fail("no CUDA caching allocator is registered (is libtorch_cuda loaded?)");
    allocator->emptyCache();
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown C++ exception");
  }
}
