// The CUDA executor: the forward pass of Llama/Qwen2/Qwen3/Mistral on one GPU, built from the
// kernels in kernels/ (AWQ GEMM, paged attention, fused norms/RoPE/activation, GPU sampler) and
// cuBLASLt for the fp16 matrices that are not quantized (lm_head, unquantized checkpoints).
//
// Memory, in order (SPEC section 7): weights (q/k/v and gate/up fused into one GEMM each, AWQ
// tensors repacked into the kernel's tile layout at load), then activations and workspaces
// sized for the largest step (max_num_batched_tokens tokens, max_num_seqs sequences), then the
// paged KV pool from what is left of gpu_memory_utilization x total memory. A model that does
// not fit is refused with the numbers.
//
// A step: one host->device copy of the step's metadata (pinned staging), the layers, the final
// norm on the rows that sample, lm_head into fp32 logits, the sampler, one device->host copy of
// the results. Pure decode steps (one token per sequence) use decode attention and can be
// replayed from CUDA graphs captured per padded batch size; mixed steps use prefill attention.
// One stream; the engine thread owns the executor (docs/ARCHITECTURE.md).
#pragma once

#include <memory>

#include "engine/engine.h"
#include "engine/executor.h"
#include "engine/model_weights.h"

namespace awqd {

// Throws std::runtime_error with the numbers when the model does not fit.
std::unique_ptr<Executor> make_cuda_executor(const ModelWeights& weights, const EngineConfig& config);

}  // namespace awqd
