#include <algorithm>
#include <string>

#include "kernels/common.cuh"
#include "kernels/norm.cuh"
#include "kernels/ptx.cuh"

namespace awqd::cuda {

namespace {

constexpr int kMaxChunks = 4;  // 16-byte chunks per thread

template <bool kAdd>
__global__ void rmsnorm_kernel(__half* out, __half* __restrict__ residual, const __half* x,
                               const __half* __restrict__ weight, int hidden, float eps) {
  __shared__ float scratch[32];
  ptx::launch_dependents();  // the GEMM after the norm may start streaming its weights
  const int chunks = hidden / 8;
  // The norm weight (a model parameter, which no kernel writes) is read while the kernel before
  // finishes, so its load is not a second round trip after the reduction.
  const uint4* w = reinterpret_cast<const uint4*>(weight);
  uint4 wv[kMaxChunks];
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int idx = threadIdx.x + c * blockDim.x;
    wv[c] = idx < chunks ? w[idx] : make_uint4(0, 0, 0, 0);
  }
  ptx::grid_dependency_wait();  // launched with PDL: x and the residual come from the kernel before
  const std::size_t row = blockIdx.x;
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * hidden);
  float v[kMaxChunks][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int idx = threadIdx.x + c * blockDim.x;
    if (idx < chunks) {
      ptx::unpack8(xr[idx], v[c]);
      if constexpr (kAdd)
        ptx::add_to_residual8(v[c], reinterpret_cast<uint4*>(residual + row * hidden)[idx]);
#pragma unroll
      for (int i = 0; i < 8; ++i) sum_sq += v[c][i] * v[c][i];
    }
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(hidden) + eps);
  uint4* orow = reinterpret_cast<uint4*>(out + row * hidden);
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int idx = threadIdx.x + c * blockDim.x;
    if (idx < chunks) {
      float wf[8];
      ptx::unpack8(wv[c], wf);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[c][i] = v[c][i] * inv_rms * wf[i];
      orow[idx] = ptx::pack8(v[c]);
    }
  }
}

template <bool kAdd>
void launch_rmsnorm(const char* name, __half* out, __half* residual, const __half* x,
                    const __half* weight, int rows, int hidden, float eps, cudaStream_t stream) {
  AWQD_ARG_CHECK(name, rows >= 0, "rows=" + std::to_string(rows));
  AWQD_ARG_CHECK(name, hidden > 0 && hidden % 8 == 0 && hidden <= 8 * 1024 * kMaxChunks,
                 "hidden=" + std::to_string(hidden));
  AWQD_ARG_CHECK(name, eps > 0.0f, "eps=" + std::to_string(eps));
  AWQD_ARG_CHECK(
      name, aligned16(out) && aligned16(x) && aligned16(weight) && (!kAdd || aligned16(residual)),
      "pointers must be 16-byte aligned");
  if (rows == 0) return;
  // Enough threads to hold the row in kMaxChunks chunks each, and at least 256 (or one per
  // chunk) so that short-batch decode steps still spread a row over many warps.
  const int chunks = hidden / 8;
  int threads = (chunks + kMaxChunks - 1) / kMaxChunks;
  threads = std::max(threads, std::min(chunks, 256));
  threads = (threads + kWarpSize - 1) / kWarpSize * kWarpSize;
  launch_pdl(true, rmsnorm_kernel<kAdd>, dim3(rows), dim3(threads), 0, stream, out, residual, x,
             weight, hidden, eps);
}

}  // namespace

void rmsnorm(__half* out, const __half* x, const __half* weight, int rows, int hidden, float eps,
             cudaStream_t stream) {
  launch_rmsnorm<false>("rmsnorm", out, nullptr, x, weight, rows, hidden, eps, stream);
}

void add_rmsnorm(__half* out, __half* residual, const __half* x, const __half* weight, int rows,
                 int hidden, float eps, cudaStream_t stream) {
  launch_rmsnorm<true>("add_rmsnorm", out, residual, x, weight, rows, hidden, eps, stream);
}

}  // namespace awqd::cuda
