#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/launch.cuh"

namespace awqd::cuda {

namespace {

bool force_from_env() {
  const char* v = std::getenv("AWQD_FORCE_SM75");
  return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
}

std::atomic<bool> g_force_sm75{force_from_env()};

#ifndef AWQD_EMULATE
struct CachedDevice {
  int sm_version = 0;
  int sm_count = 0;
  std::size_t smem_optin = 0;
};

constexpr int kMaxDevices = 64;

const CachedDevice& cached_device() {
  static CachedDevice cache[kMaxDevices];
  static std::once_flag once[kMaxDevices];
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= kMaxDevices) {
    throw CudaError("device index " + std::to_string(dev) + " beyond the supported 64");
  }
  std::call_once(once[dev], [dev] {
    int major = 0, minor = 0, sms = 0, optin = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    cache[dev] = {major * 10 + minor, sms, static_cast<std::size_t>(optin)};
  });
  return cache[dev];
}
#endif

}  // namespace

#ifdef AWQD_EMULATE
int current_sm_version() { return emu::device().sm_version; }
int current_sm_count() { return emu::device().multiprocessors; }
std::size_t current_smem_optin() { return emu::device().smem_per_block_optin; }
#else
int current_sm_version() { return cached_device().sm_version; }
int current_sm_count() { return cached_device().sm_count; }
std::size_t current_smem_optin() { return cached_device().smem_optin; }
#endif

void set_force_sm75_path(bool force) { g_force_sm75.store(force); }
bool sm75_path_forced() { return g_force_sm75.load(); }
bool use_sm75_path() { return sm75_path_forced() || current_sm_version() < 80; }

namespace detail {

void allow_dynamic_smem(const void* kernel, std::size_t bytes) {
#ifdef AWQD_EMULATE
  (void)kernel;
  (void)bytes;
#else
  // Per (kernel, device): the dynamic bytes it may use without asking, and at most.
  struct Limits {
    std::size_t free_bytes;  // 48 KiB less the kernel's static shared memory
    std::size_t max_bytes;   // the device's opt-in limit less the static shared memory
    bool raised;
  };
  // One lock per device (never one for all: see kernels/cublaslt_gemm.cc on tensor parallelism).
  struct PerDevice {
    std::mutex mu;
    std::map<const void*, Limits> known;
  };
  static PerDevice* devices = new PerDevice[kMaxDevices];
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= kMaxDevices) throw CudaError("device index " + std::to_string(dev) + " beyond the supported 64");
  std::lock_guard<std::mutex> lock(devices[dev].mu);
  auto& known = devices[dev].known;
  auto it = known.find(kernel);
  if (it == known.end()) {
    cudaFuncAttributes attr{};
    CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const std::size_t stat = attr.sharedSizeBytes;
    const std::size_t optin = cached_device().smem_optin;
    it = known.emplace(kernel,
                       Limits{stat < 48 * 1024 ? 48 * 1024 - stat : 0, optin > stat ? optin - stat : 0, false})
             .first;
  }
  Limits& l = it->second;
  if (bytes > l.max_bytes)
    throw CudaError("kernel needs " + std::to_string(bytes) + " bytes of dynamic shared memory; this device allows " +
                    std::to_string(l.max_bytes) + " beside its static shared memory");
  if (bytes > l.free_bytes && !l.raised) {
    // Raise to the device maximum once, so later launches with more need no second call.
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(l.max_bytes)));
    l.raised = true;
  }
#endif
}

}  // namespace detail

}  // namespace awqd::cuda
