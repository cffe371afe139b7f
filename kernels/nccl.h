// NCCL, loaded at run time. Only a tensor-parallel engine needs it, so awqd does not link
// libnccl: a one-GPU engine, the tests and the CPU executor run where NCCL is not installed, and
// a tensor-parallel engine that cannot find it says so. The first use opens $AWQD_NCCL_LIBRARY
// when set, else libnccl.so.2 from the loader's search path (LD_LIBRARY_PATH, ldconfig), then
// the CUDA toolkit's lib/ and lib64/.
//
// NVLink multicast (NVLS) stays off: the first use sets NCCL_NVLS_ENABLE=0 unless the environment
// already sets it (our collectives are small; multicast objects can put shared GPUs out of
// service on the machines we test on).
#pragma once

#include <nccl.h>

#include <string>

namespace awqd::cuda {

struct NcclApi {
  decltype(&::ncclGetVersion) GetVersion;
  decltype(&::ncclGetErrorString) GetErrorString;
  decltype(&::ncclCommInitAll) CommInitAll;
  decltype(&::ncclCommDestroy) CommDestroy;
  decltype(&::ncclCommAbort) CommAbort;
  decltype(&::ncclAllReduce) AllReduce;
  decltype(&::ncclAllGather) AllGather;
  decltype(&::ncclSend) Send;
  decltype(&::ncclRecv) Recv;
  decltype(&::ncclGroupStart) GroupStart;
  decltype(&::ncclGroupEnd) GroupEnd;
  std::string path;  // the library that was opened
  int version = 0;   // e.g. 22809 for 2.28.9
};

// The loaded library (thread-safe, loaded once). Throws CudaError naming the library and what
// to do when it cannot be opened or lacks a symbol.
const NcclApi& nccl();

[[noreturn]] void throw_nccl_error(const char* what, ncclResult_t result, const char* file,
                                   int line);

}  // namespace awqd::cuda

#define NCCL_CHECK(expr)                                                     \
  do {                                                                       \
    ncclResult_t awqd_nccl_ = (expr);                                        \
    if (awqd_nccl_ != ncclSuccess)                                           \
      ::awqd::cuda::throw_nccl_error(#expr, awqd_nccl_, __FILE__, __LINE__); \
  } while (0)
