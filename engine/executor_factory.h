// Creates the executor an EngineConfig asks for ("cpu" or "cuda"), with a clear error when the
// build or the machine cannot provide it.
#pragma once

#include <memory>

#include "engine/engine.h"
#include "engine/executor.h"
#include "engine/model_weights.h"

namespace awqd {

std::unique_ptr<Executor> make_executor(const ModelWeights& weights, const EngineConfig& config);

}  // namespace awqd
