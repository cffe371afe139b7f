// Synthetic AWQ checkpoints for benchmarks and tests (`awqd synth`, SPEC section 6): the exact
// config.json, tensor names, shapes, dtypes and sharding of a real model's AWQ GEMM release,
// filled with seeded random values in realistic ranges, plus a tokenizer.
//
// Values, chosen so that a forward pass stays finite and fp16-safe over 80 layers and long
// generations: every linear's weights W = (q - z) * s have q uniform over 0..15, z 7 or 8
// (mean of q - z: 0, standard deviation about 4.6) and s = 1 / (4.6 sqrt(K)) * (1 +- 20 %), so
// each linear maps unit-RMS inputs to unit-RMS outputs (real checkpoints: std 0.01-0.02 at
// K = 4096); norms are about 1, so each block's input has unit RMS whatever the residual holds,
// and the residual grows like sqrt(layers) (RMS about 5 after 80 layers); embeddings and lm_head
// have std 1 / sqrt(hidden), so logits have std about 1.
//
// The tokenizer is copied from a directory when given; otherwise a byte-level BPE of the model's
// vocabulary size is generated: the 256 byte tokens, merges of frequent letters up to the regular
// vocabulary, and the family's special tokens at their real ids (Llama-3: <|begin_of_text|> ...
// <|reserved_special_token_250|>; Qwen2.5: <|endoftext|>, <|im_start|>, <|im_end|>, ...;
// Mistral: <unk>, <s>, </s> - a byte-level stand-in for its SentencePiece vocabulary).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace awqd {

// Names `synth --like` accepts: llama3-8b, llama3.1-8b, llama3-70b, qwen2.5-7b, qwen2.5-14b,
// qwen2.5-32b, mistral-7b, tiny (4 layers, hidden 256, vocabulary 1024; for tests).
std::vector<std::string> synth_model_names();

// The config.json of a named model (AWQ GEMM, group size 128). Throws std::invalid_argument
// naming the known models for an unknown name.
nlohmann::json synth_config(const std::string& name);

struct SynthOptions {
  std::string like;                     // a name from synth_model_names()
  std::filesystem::path out;
  std::uint64_t seed = 0;
  std::filesystem::path tokenizer_dir;  // copy its tokenizer files; empty: generate byte-level
  std::size_t max_shard_bytes = 5'000'000'000;  // real releases shard at about 5 GB
};

struct SynthResult {
  std::size_t weight_bytes = 0;  // sum of tensor sizes
  int shards = 0;
  double seconds = 0;
};

// Writes config.json, generation_config.json, the weights (one tensor in memory at a time) and
// tokenizer.json + tokenizer_config.json. progress(bytes_written, bytes_total) per tensor.
SynthResult synth_model(const SynthOptions& options,
                        const std::function<void(std::size_t, std::size_t)>& progress = {});

}  // namespace awqd
