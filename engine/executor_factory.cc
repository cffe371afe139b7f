#include "engine/executor_factory.h"

#include <stdexcept>
#include <string>

#include "engine/cpu_executor.h"
#ifdef AWQD_HAS_CUDA
#include "engine/cuda_executor.h"
#include "kernels/device.cuh"
#endif

namespace awqd {

std::string resolve_device(const std::string& device) {
  if (device != "auto") return device;
#ifdef AWQD_HAS_CUDA
  return cuda::device_count() > 0 ? "cuda" : "cpu";
#else
  return "cpu";
#endif
}

std::unique_ptr<Executor> make_executor(const ModelWeights& weights, const EngineConfig& requested) {
  EngineConfig config = requested;
  config.device = resolve_device(requested.device);
  if (config.device == "cpu") {
    if (config.tensor_parallel != 1)
      throw std::invalid_argument("tensor_parallel = " + std::to_string(config.tensor_parallel) +
                                  ": tensor parallelism splits a model over GPUs (device cuda); the CPU executor "
                                  "runs the whole model (use tensor_parallel = 1)");
    return std::make_unique<CpuExecutor>(weights, config.cpu_kv_cache_bytes, config.num_kv_blocks_override);
  }
  if (config.device == "cuda") {
#ifdef AWQD_HAS_CUDA
    return make_cuda_executor(weights, config);
#else
    throw std::runtime_error("device \"cuda\": this build of awqd has no CUDA support (configured without nvcc); "
                             "use --device cpu or rebuild with the CUDA toolkit");
#endif
  }
  throw std::invalid_argument("unknown device \"" + config.device + "\" (expected auto, cpu or cuda)");
}

}  // namespace awqd
