// fp16 GEMM through cuBLASLt: the large-M path of the AWQ GEMM (after dequantization) and the
// baseline every AWQ benchmark is compared against.
//   y[M, N] = x[M, K] * w[K, N] (+ bias[N]), row-major fp16 operands, fp32 accumulation.
// Row-major y = x w is column-major y^T = w^T x^T, so cuBLASLt sees A = w (N x K, ld = ldw),
// B = x (K x M, ld = ldx), D = y (N x M, ld = ldy) with no transposes; the bias (one value per
// row of D) goes through the BIAS epilogue.
// Thread-safe. One cuBLASLt handle per device; descriptors and the heuristic's algorithm are
// cached per (device, shape, leading dimensions, pointer alignment, workspace size), so a call
// after the first does no heuristic query and can be captured in a CUDA graph.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace awqd::cuda {

void cublaslt_gemm_f16(const __half* x, int ldx, const __half* w, int ldw, const __half* bias,
                       __half* y, int ldy, int M, int N, int K, void* workspace,
                       std::size_t workspace_bytes, cudaStream_t stream);

}  // namespace awqd::cuda
