// AWQ (Lin et al., MLSys 2024) and round-to-nearest 4-bit quantization of a model's decoder
// linears, in fp32 on the CPU, as AutoAWQ / llm-awq do it. Writes the AWQ GEMM format
// (SPEC section 2) through a CheckpointWriter.
//
// AWQ, per decoder layer, on calibration samples (token ids, seq_len each):
//   1. Forward the layer with its original weights over every sample, keeping each linear
//      group's input; the layer's output (rounded to fp16) is the next layer's input, so every
//      layer sees what the unquantized model computes.
//   2. Scale search per group: [q,k,v] after input_layernorm (block: the attention, o included),
//      [o] after v (only when v's and o's weights have one shape, i.e. no GQA), [gate,up] after
//      post_attention_layernorm (block: the MLP), [down] after up. With x_mean the mean |input|
//      per channel and w_mean the mean over output rows of |w| / max|w| of its group:
//        s = x_mean^a / (w_mean^(1-a) + 1e-4)   (duo scaling; x_mean^a without it), a = i/20, i <
//        20 s /= sqrt(max(s) min(s))
//      the s whose fake-quantized weights Q(W s) / s give the block output nearest (MSE) to the
//      original's wins. Every group is searched against the original layer.
//   3. Apply: the preceding norm's weight (or linear's output rows) is divided by s, the group's
//      input columns multiplied by s (the product is unchanged); the kept inputs are divided by s.
//   4. Clip search per (output row, group) for every linear but q and k: max |w| shrunk by
//      (1 - i/20), i < 10, the one whose quantized group output over 512 kept tokens is nearest
//      the original's wins; weights are clamped to it.
//   5. Zero-point 4-bit round to nearest per group of G inputs: s = (max - min) / 15,
//      z = clamp(-round(min / s), 0, 15), q = clamp(round(w / s) + z, 0, 15).
// RTN is step 5 alone, on the original weights.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "engine/checkpoint_writer.h"
#include "engine/model_weights.h"

namespace awqd {

enum class QuantMethod { kAwq, kRtn };

struct QuantizeOptions {
  QuantMethod method = QuantMethod::kAwq;
  int group_size = 128;          // G: 32, 64 or 128; every linear's K must be a multiple
  int scale_grid = 20;           // a = 0, 1/20, ..., 19/20; 0: no scale search (s = 1)
  bool duo_scaling = true;       // divide by w_mean^(1-a) (AutoAWQ's default)
  int clip_grid = 20;            // shrink steps of 1/20 ...
  float clip_max_shrink = 0.5f;  // ... up to (not including) half: 1.0 down to 0.55; 0: no clipping
  int clip_tokens = 512;         // kept tokens the clip search measures on
  int chunk_tokens = 8192;       // tokens per forward chunk (bounds activation memory)
};

struct QuantizeProgress {
  int layer = 0;  // layers done
  int num_layers = 0;
  double elapsed_s = 0;
  double eta_s = 0;
  std::string detail;  // what the layer chose, e.g. "qkv a=0.45 mlp a=0.30 down a=0.55"
};

// Quantizes every decoder linear of an unquantized model and adds the whole checkpoint (fp16
// embeddings, norms, lm_head; AWQ qweight/qzeros/scales) to `out`. `samples` are the calibration
// token sequences (AWQ only; RTN ignores them). Throws std::invalid_argument when the model is
// already quantized, a K is not a multiple of G, an N not a multiple of 8, or AWQ has no samples.
void quantize_model(const ModelWeights& weights,
                    const std::vector<std::vector<std::int32_t>>& samples,
                    const QuantizeOptions& options, CheckpointWriter& out,
                    const std::function<void(const QuantizeProgress&)>& progress = {});

// The config.json of the quantized model: the original with `quantization_config` added and
// `torch_dtype` float16.
nlohmann::json quantized_config(const nlohmann::json& original, int group_size);

// Fake quantization (quantize, then dequantize) of W (N, K) row-major, zero-point 4-bit per group
// of G consecutive inputs of each row: the values the AWQ GEMM checkpoint will hold.
void fake_quantize_nk(const float* W, int N, int K, int group_size, float* out);

}  // namespace awqd
