// Device discovery: how many CUDA devices this process can use and what they are. Used by the
// engine to size memory and pick kernel paths, and by tests to skip when there is no GPU.
#pragma once

#include <cstddef>
#include <string>

namespace awqd::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0;              // compute capability, e.g. 7.5 for Turing, 9.0 for Hopper
  int sm_minor = 0;
  int multiprocessors = 0;
  std::size_t total_memory = 0;  // bytes
  std::size_t l2_bytes = 0;
  std::size_t smem_per_block_optin = 0;  // bytes, after cudaFuncSetAttribute
};

// Number of usable devices; 0 when there is no driver or no device (never throws).
int device_count() noexcept;

// Properties of device `index`; throws CudaError when it does not exist.
DeviceInfo device_info(int index);

// What `awqd status` shows of a device: whole-device memory (every process's) and the share of
// the last sample period in which a kernel ran, from NVML (libnvidia-ml, opened at run time);
// without NVML, memory from cudaMemGetInfo and utilization -1. Never throws (zeros on failure).
struct DeviceUsage {
  std::size_t memory_used = 0, memory_total = 0;  // bytes
  int utilization = -1;                           // percent, -1 unknown
};
DeviceUsage device_usage(int index) noexcept;

}  // namespace awqd::cuda
