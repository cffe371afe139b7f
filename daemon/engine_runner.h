// The product's Runner: an awqd::Engine on the model of the config. Prompts are tokenized here,
// on the engine thread, with the model's tokenizer and chat format.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "daemon/config.h"
#include "daemon/runner.h"

namespace awqd {

// The factory of engine replicas for `config`: replica r runs on GPUs
// gpus[r * tensor_parallel .. (r + 1) * tensor_parallel). A factory call throws
// std::runtime_error with the engine's message when the model cannot be loaded.
RunnerFactory engine_runner_factory(const DaemonConfig& config);

// A fingerprint of a model directory: FNV-1a 64 over config.json and the header (tensor names,
// dtypes, shapes, offsets) and size of every safetensors file, as 16 hex digits. Cheap (no
// weight bytes are read) and changes whenever the checkpoint does.
std::string model_fingerprint(const std::filesystem::path& model_dir);

}  // namespace awqd
