// The product's Runner: an awqd::Engine on the model of the config. Prompts are tokenized here,
// on the engine thread, with the model's tokenizer and chat format.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "daemon/config.h"
#include "daemon/runner.h"

namespace awqd {

// Builds replica `replica` of the engine (GPUs gpus[replica * tp .. (replica + 1) * tp)).
// Throws std::runtime_error with the engine's message when the model cannot be loaded.
std::unique_ptr<Runner> make_engine_runner(const DaemonConfig& config, int replica);

// A fingerprint of a model directory: FNV-1a 64 over config.json and the header (tensor names,
// dtypes, shapes, offsets) and size of every safetensors file, as 16 hex digits. Cheap (no
// weight bytes are read) and changes whenever the checkpoint does.
std::string model_fingerprint(const std::filesystem::path& model_dir);

}  // namespace awqd
