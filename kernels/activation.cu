#include <string>

#include "kernels/activation.cuh"
#include "kernels/common.cuh"
#include "kernels/ptx.cuh"
#include "kernels/silu.cuh"

namespace awqd::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void silu_mul_kernel(__half* __restrict__ out, int out_stride,
                                const __half* __restrict__ gate, const __half* __restrict__ up,
                                int in_stride, int chunks) {
  ptx::launch_dependents();  // the down projection may start streaming its weights
  const int chunk = blockIdx.x * kThreads + threadIdx.x;
  if (chunk >= chunks) return;
  const std::size_t row = blockIdx.y;
  *reinterpret_cast<uint4*>(out + row * out_stride + chunk * 8) =
      silu_mul8(*reinterpret_cast<const uint4*>(gate + row * in_stride + chunk * 8),
                *reinterpret_cast<const uint4*>(up + row * in_stride + chunk * 8));
}

}  // namespace

void silu_mul(__half* out, int out_stride, const __half* gate, const __half* up, int in_stride,
              int rows, int cols, cudaStream_t stream) {
  constexpr const char* kName = "silu_mul";
  AWQD_ARG_CHECK(kName, rows >= 0 && rows <= 65535, "rows=" + std::to_string(rows));
  AWQD_ARG_CHECK(kName, cols > 0 && cols % 8 == 0, "cols=" + std::to_string(cols));
  AWQD_ARG_CHECK(
      kName, out_stride >= cols && out_stride % 8 == 0 && in_stride >= cols && in_stride % 8 == 0,
      "out_stride=" + std::to_string(out_stride) + " in_stride=" + std::to_string(in_stride));
  AWQD_ARG_CHECK(kName, aligned16(out) && aligned16(gate) && aligned16(up),
                 "pointers must be 16-byte aligned");
  if (rows == 0) return;
  const int chunks = cols / 8;
  launch(silu_mul_kernel, dim3((chunks + kThreads - 1) / kThreads, rows), dim3(kThreads), 0, stream,
         out, out_stride, gate, up, in_stride, chunks);
}

}  // namespace awqd::cuda
