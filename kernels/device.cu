#include <dlfcn.h>

#include "kernels/cuda_check.cuh"
#include "kernels/device.cuh"

namespace awqd::cuda {

namespace {

// The few NVML entry points device_usage needs (their ABI is stable; nvml.h is not installed
// with every toolkit).
struct Nvml {
  struct Utilization {
    unsigned int gpu, memory;
  };
  struct Memory {
    unsigned long long total, free, used;
  };
  using Device = void*;
  int (*init)() = nullptr;
  int (*by_pci)(const char*, Device*) = nullptr;
  int (*utilization)(Device, Utilization*) = nullptr;
  int (*memory)(Device, Memory*) = nullptr;
  bool ok = false;

  Nvml() {
    void* lib = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return;
    init = reinterpret_cast<int (*)()>(::dlsym(lib, "nvmlInit_v2"));
    by_pci = reinterpret_cast<int (*)(const char*, Device*)>(::dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    utilization = reinterpret_cast<int (*)(Device, Utilization*)>(::dlsym(lib, "nvmlDeviceGetUtilizationRates"));
    memory = reinterpret_cast<int (*)(Device, Memory*)>(::dlsym(lib, "nvmlDeviceGetMemoryInfo"));
    ok = init && by_pci && utilization && memory && init() == 0;
  }
};

}  // namespace

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver"/"no device" error
    return 0;
  }
  return n;
}

DeviceInfo device_info(int index) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  DeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  info.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  info.smem_per_block_optin = prop.sharedMemPerBlockOptin;
  return info;
}

DeviceUsage device_usage(int index) noexcept {
  static const Nvml nvml;
  DeviceUsage u;
  char bus[32] = {};
  if (nvml.ok && cudaDeviceGetPCIBusId(bus, sizeof bus, index) == cudaSuccess) {
    Nvml::Device d = nullptr;
    Nvml::Memory m{};
    Nvml::Utilization util{};
    if (nvml.by_pci(bus, &d) == 0 && nvml.memory(d, &m) == 0) {
      u.memory_used = m.used;
      u.memory_total = m.total;
      if (nvml.utilization(d, &util) == 0) u.utilization = static_cast<int>(util.gpu);
      return u;
    }
  }
  cudaGetLastError();
  int previous = 0;
  std::size_t free_bytes = 0, total = 0;
  if (cudaGetDevice(&previous) == cudaSuccess && cudaSetDevice(index) == cudaSuccess &&
      cudaMemGetInfo(&free_bytes, &total) == cudaSuccess) {
    u.memory_used = total - free_bytes;
    u.memory_total = total;
  }
  cudaSetDevice(previous);
  cudaGetLastError();
  return u;
}

}  // namespace awqd::cuda
