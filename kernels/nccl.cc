#include "kernels/nccl.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda_check.cuh"

#ifndef AWQD_CUDA_LIB_DIR
#define AWQD_CUDA_LIB_DIR "/usr/local/cuda/lib64"
#endif

namespace awqd::cuda {

namespace {

template <typename F>
void bind(void* lib, const std::string& path, const char* name, F& fn) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  if (fn == nullptr)
    throw CudaError(path + " has no symbol " + name +
                    ": awqd needs NCCL 2.18 or newer (set AWQD_NCCL_LIBRARY)");
}

NcclApi load() {
  ::setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("AWQD_NCCL_LIBRARY"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  } else {
    candidates = {"libnccl.so.2", std::string(AWQD_CUDA_LIB_DIR) + "/libnccl.so.2",
                  std::string(AWQD_CUDA_LIB_DIR) + "/../lib/libnccl.so.2"};
  }
  void* lib = nullptr;
  std::string tried, path;
  for (const std::string& c : candidates) {
    lib = ::dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib != nullptr) {
      path = c;
      break;
    }
    const char* err = ::dlerror();
    tried += "\n  " + c + ": " + (err ? err : "not found");
  }
  if (lib == nullptr)
    throw CudaError(
        "tensor_parallel > 1 needs NCCL (libnccl.so.2), which could not be opened:" + tried +
        "\nInstall NCCL (Debian: libnccl2) or set AWQD_NCCL_LIBRARY to its path.");
  NcclApi api;
  api.path = path;
  bind(lib, path, "ncclGetVersion", api.GetVersion);
  bind(lib, path, "ncclGetErrorString", api.GetErrorString);
  bind(lib, path, "ncclCommInitAll", api.CommInitAll);
  bind(lib, path, "ncclCommDestroy", api.CommDestroy);
  bind(lib, path, "ncclCommAbort", api.CommAbort);
  bind(lib, path, "ncclAllReduce", api.AllReduce);
  bind(lib, path, "ncclAllGather", api.AllGather);
  bind(lib, path, "ncclSend", api.Send);
  bind(lib, path, "ncclRecv", api.Recv);
  bind(lib, path, "ncclGroupStart", api.GroupStart);
  bind(lib, path, "ncclGroupEnd", api.GroupEnd);
  api.GetVersion(&api.version);
  return api;
}

}  // namespace

const NcclApi& nccl() {
  static const NcclApi api = load();  // a failed load throws and is retried by the next call
  return api;
}

void throw_nccl_error(const char* what, ncclResult_t result, const char* file, int line) {
  const char* detail = "unknown NCCL error";
  try {
    detail = nccl().GetErrorString(result);
  } catch (const CudaError&) {
  }
  throw_cuda_error(what, detail, file, line);
}

}  // namespace awqd::cuda
