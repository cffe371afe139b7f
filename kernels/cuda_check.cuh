// Error checking for CUDA runtime, cuBLASLt and NCCL calls: every failure names the call, the
// file and the line, and throws (host code) so the caller can report it and shut down cleanly.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace awqd::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_cuda_error(const char* what, const char* detail, const char* file,
                                          int line) {
  throw CudaError(std::string(what) + " failed: " + detail + " at " + file + ":" +
                  std::to_string(line));
}

}  // namespace awqd::cuda

#define CUDA_CHECK(expr)                                                                 \
  do {                                                                                   \
    cudaError_t awqd_err_ = (expr);                                                      \
    if (awqd_err_ != cudaSuccess)                                                        \
      ::awqd::cuda::throw_cuda_error(#expr, cudaGetErrorString(awqd_err_), __FILE__,     \
                                     __LINE__);                                          \
  } while (0)

// After a kernel launch: catches bad launch configurations immediately (not asynchronous faults).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
