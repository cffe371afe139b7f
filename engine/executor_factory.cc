#include "engine/executor_factory.h"

#include <stdexcept>

#include "engine/cpu_executor.h"

namespace awqd {

std::unique_ptr<Executor> make_executor(const ModelWeights& weights, const EngineConfig& config) {
  if (config.device == "cpu")
    return std::make_unique<CpuExecutor>(weights, config.cpu_kv_cache_bytes, config.num_kv_blocks_override);
  if (config.device == "cuda")
    throw std::runtime_error("device \"cuda\": the CUDA executor is not part of this build yet; use --device cpu");
  throw std::invalid_argument("unknown device \"" + config.device + "\" (expected cpu or cuda)");
}

}  // namespace awqd
