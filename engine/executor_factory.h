// Creates the executor an EngineConfig asks for ("cpu", "cuda", or "auto": cuda where this build
// has CUDA and the machine a GPU, else cpu), with a clear error when the build or the machine
// cannot provide it.
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/executor.h"
#include "engine/model_weights.h"

namespace awqd {

// "auto" resolved as above; other names unchanged.
std::string resolve_device(const std::string& device);

std::unique_ptr<Executor> make_executor(const ModelWeights& weights, const EngineConfig& config);

}  // namespace awqd
