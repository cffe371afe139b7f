// fp16 GEMM through cuBLASLt: the large-M path of the AWQ GEMM (after dequantization), the
// engine's unquantized linears and lm_head, and the baseline every AWQ benchmark is compared
// against.
//   y[M, N] = x[M, K] * W (+ bias[N]), row-major fp16 x, fp32 accumulation, fp16 or fp32 y,
//   W either w[K, N] row-major (kKN) or w[N, K] row-major (kNK, nn.Linear's layout: W = w^T).
// Row-major y = x W is column-major y^T = W^T x^T, so cuBLASLt sees A = w (N x K with ld = ldw
// for kKN; K x N transposed for kNK), B = x (K x M, ld = ldx), D = y (N x M, ld = ldy); the
// bias (one value per row of D) goes through the BIAS epilogue.
// Thread-safe. One cuBLASLt handle per device; descriptors and the heuristic's algorithm are
// cached per (device, shape, leading dimensions, pointer alignment, workspace size), so a call
// after the first does no heuristic query and can be captured in a CUDA graph.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace awqd::cuda {

enum class WeightLayout { kKN, kNK };

struct DenseGemmArgs {
  const __half* x = nullptr;  // [M, ldx]
  int ldx = 0;
  const __half* w = nullptr;  // [K, ldw] (kKN) or [N, ldw] (kNK)
  int ldw = 0;
  WeightLayout layout = WeightLayout::kKN;
  const __half* bias = nullptr;  // [N] or null (fp16 y only)
  void* y = nullptr;             // [M, ldy], __half or float
  int ldy = 0;
  bool y_fp32 = false;
  int M = 0, N = 0, K = 0;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

void cublaslt_gemm(const DenseGemmArgs& args, cudaStream_t stream);

// y[M, N] = x[M, K] w[K, N] (+ bias), all fp16.
void cublaslt_gemm_f16(const __half* x, int ldx, const __half* w, int ldw, const __half* bias,
                       __half* y, int ldy, int M, int N, int K, void* workspace,
                       std::size_t workspace_bytes, cudaStream_t stream);

}  // namespace awqd::cuda
