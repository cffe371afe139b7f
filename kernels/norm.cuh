// RMSNorm over the last dimension, with an optional fused residual add.
//
//   rmsnorm:      out[t, :] = x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * weight
//   add_rmsnorm:  residual[t, :] = fp16(residual[t, :] + x[t, :])      (in place)
//                 out[t, :]      = rmsnorm(residual[t, :])             (of the rounded sum)
// Storage is fp16, arithmetic fp32: the residual stream is kept in fp16 and rounded once per
// add, as vLLM's fused_add_rms_norm does; the norm of a row is taken of the values stored.
//
// Design: one block per row; each thread keeps up to kMaxChunks 16-byte chunks (8 fp16) of the
// row in registers, so a row is read once and written once: bytes moved per row are
// 2*hidden*(2 + 2*add) plus the weight (L2-resident). Block size: hidden/8/kMaxChunks threads,
// rounded up to a warp, at least one warp. Same code on every arch (no tensor cores).
// Launched with Programmatic Dependent Launch on sm_90 (kernels/launch.cuh): x and the residual
// are read after griddepcontrol.wait, the weight before it, so `weight` must not be written by the
// kernel just before on the stream (it is a model parameter in the engine).
// Launch constraints: hidden % 8 == 0, hidden <= 8 * 1024 * kMaxChunks, 16-byte aligned rows.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace awqd::cuda {

// out, x: [rows, hidden]; weight: [hidden]. out may equal x.
void rmsnorm(__half* out, const __half* x, const __half* weight, int rows, int hidden, float eps,
             cudaStream_t stream);

// residual (in/out), x, out: [rows, hidden]; weight: [hidden]. out may equal x.
void add_rmsnorm(__half* out, __half* residual, const __half* x, const __half* weight, int rows,
                 int hidden, float eps, cudaStream_t stream);

}  // namespace awqd::cuda
