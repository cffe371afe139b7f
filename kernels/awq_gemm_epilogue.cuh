// Output helpers shared by the AWQ GEMM kernels: the fp16 store with
// bias and the split-K reduction through the workspace (design: kernels/awq_gemm.cuh).
#pragma once

#include <cuda_fp16.h>

#include <cstddef>

#include "kernels/awq_gemm_tiles.cuh"

namespace awqd::cuda::awq_gemm_detail {

// y[row][col, col + 1] = (v0, v1) + bias, as fp16 (col even: N % 8 == 0).
__device__ __forceinline__ void store_y_pair(const Params& p, int row, int col, float v0, float v1) {
  if (p.bias != nullptr) {
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(p.bias + col));
    v0 += b.x;
    v1 += b.y;
  }
  *reinterpret_cast<__half2*>(p.y + static_cast<std::size_t>(row) * p.N + col) =
      __floats2half2_rn(v0, v1);
}

// Split z's fp32 partial sum of y[row][col] in the workspace.
__device__ __forceinline__ float* split_partial(const Params& p, int z, int row, int col) {
  return p.partials + (static_cast<std::size_t>(z) * p.M + row) * p.N + col;
}

// Split-K arrival (every kernel, after its threads have written their partial sums): returns true
// in every thread of the block that arrived last among the splits of its tile (the counter of
// block (x, y), zero between launches, which that block resets). After it, that block reads
// the other splits' sums (__ldcg).
__device__ __forceinline__ bool arrive_last_split(const Params& p, int& s_is_last) {
  __threadfence();  // this thread's partial sums are visible GPU-wide before the arrival below
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = p.counters + blockIdx.y * gridDim.x + blockIdx.x;
    const int arrived = atomicAdd(counter, 1);
    s_is_last = arrived == p.splits - 1;
    if (s_is_last) *counter = 0;  // every split has arrived: reset for the next launch
  }
  __syncthreads();
  if (!s_is_last) return false;
  __threadfence();
  return true;
}

// Split-K end of the tiled and Hopper kernels (grid (n_blocks, m_blocks, splits)): the last block
// of the tile to arrive adds the splits in split order, so the result does not depend on which
// block came last.
template <class C>
__device__ __forceinline__ void finish_split_tile(const Params& p, int m0, int n_block,
                                                  int& s_is_last) {
  if (!arrive_last_split(p, s_is_last)) return;
  // The whole block adds the splits' partial tiles, 4 columns per 16-byte load (N % 8 == 0).
  const int col0 = n_block * C::kBN;
  for (int e = threadIdx.x; e < C::kBM * (C::kBN / 4); e += C::kThreads) {
    const int row = m0 + e / (C::kBN / 4), col = col0 + (e % (C::kBN / 4)) * 4;
    if (row >= p.M || col >= p.N) continue;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
    for (int z = 0; z < p.splits; ++z) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(split_partial(p, z, row, col)));
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    store_y_pair(p, row, col, sum.x, sum.y);
    store_y_pair(p, row, col + 2, sum.z, sum.w);
  }
}

}  // namespace awqd::cuda::awq_gemm_detail
