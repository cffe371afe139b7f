#include <algorithm>
#include <string>

#include "kernels/common.cuh"
#include "kernels/kv_cache.cuh"
#include "kernels/ptx.cuh"
#include "kernels/rope.cuh"

namespace awqd::cuda {

namespace {

template <int kHeadDim>
__global__ void qkv_rope_cache_kernel(const QkvRopeCacheArgs a) {
  constexpr int kHalf = kHeadDim / 2;
  constexpr int kThreadsPerHead = kHalf / 8;  // each owns 8 dims of each half
  __shared__ float cos_s[kHalf];
  __shared__ float sin_s[kHalf];

  ptx::launch_dependents();  // decode attention may start prefetching the cached KV blocks
  // With a.pdl, positions, slot mapping and frequencies are inputs no kernel before this one
  // writes, so the angles are computed while the qkv projection finishes; qkv, q_out and the
  // cache are touched only after the wait.
  const int t = blockIdx.x;
  const float pos = static_cast<float>(a.positions[t]);
  for (int i = threadIdx.x; i < kHalf; i += blockDim.x) {
    float s, c;
    sincosf(pos * a.inv_freq[i], &s, &c);
    cos_s[i] = c;
    sin_s[i] = s;
  }
  const int slot = a.slot_mapping[t];
  ptx::grid_dependency_wait();
  __syncthreads();

  const int block = slot / kKvCacheBlockSize, row = slot % kKvCacheBlockSize;
  const int total_heads = a.num_heads + 2 * a.num_kv_heads;
  const int heads_per_pass = blockDim.x / kThreadsPerHead;
  const int sub = threadIdx.x % kThreadsPerHead;
  const bool qk_norm = a.q_norm_weight != nullptr;
  const __half* src_row = a.qkv + static_cast<std::size_t>(t) * total_heads * kHeadDim;

  // Every thread runs every pass (the shuffles below need whole warps); `valid` masks the tail.
  for (int base = 0; base < total_heads; base += heads_per_pass) {
    const int head = base + static_cast<int>(threadIdx.x) / kThreadsPerHead;
    const bool valid = head < total_heads;
    float x1[8], x2[8];
    if (valid) {
      const __half* src = src_row + head * kHeadDim + sub * 8;
      ptx::unpack8(*reinterpret_cast<const uint4*>(src), x1);
      ptx::unpack8(*reinterpret_cast<const uint4*>(src + kHalf), x2);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) x1[i] = x2[i] = 0.0f;
    }
    const bool is_q = head < a.num_heads;
    const bool is_v = head >= a.num_heads + a.num_kv_heads;

    float sum_sq = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) sum_sq += x1[i] * x1[i] + x2[i] * x2[i];
#pragma unroll
    for (int m = kThreadsPerHead / 2; m > 0; m >>= 1) {
      sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, m, kThreadsPerHead);
    }
    if (!valid) continue;

    if (!is_v) {
      if (qk_norm) {
        const float inv_rms = rsqrtf(sum_sq / static_cast<float>(kHeadDim) + a.norm_eps);
        const __half* w = is_q ? a.q_norm_weight : a.k_norm_weight;
        float w1[8], w2[8];
        ptx::unpack8(*reinterpret_cast<const uint4*>(w + sub * 8), w1);
        ptx::unpack8(*reinterpret_cast<const uint4*>(w + kHalf + sub * 8), w2);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          x1[i] = x1[i] * inv_rms * w1[i];
          x2[i] = x2[i] * inv_rms * w2[i];
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float c = cos_s[sub * 8 + i], s = sin_s[sub * 8 + i];
        const float r1 = x1[i] * c - x2[i] * s;
        const float r2 = x2[i] * c + x1[i] * s;
        x1[i] = r1;
        x2[i] = r2;
      }
    }

    __half* dst;
    if (is_q) {
      dst = a.q_out + static_cast<std::size_t>(t) * a.q_out_stride + head * kHeadDim;
    } else {
      if (slot < 0) continue;
      const int kv_head = is_v ? head - a.num_heads - a.num_kv_heads : head - a.num_heads;
      dst = (is_v ? a.v_cache : a.k_cache) +
            kv_cache_offset(block, kv_head, row, a.num_kv_heads, kHeadDim);
    }
    *reinterpret_cast<uint4*>(dst + sub * 8) = ptx::pack8(x1);
    *reinterpret_cast<uint4*>(dst + kHalf + sub * 8) = ptx::pack8(x2);
  }
}

}  // namespace

void qkv_rope_cache(const QkvRopeCacheArgs& a, cudaStream_t stream) {
  constexpr const char* kName = "qkv_rope_cache";
  AWQD_ARG_CHECK(kName, a.head_dim == 64 || a.head_dim == 128,
                 "head_dim=" + std::to_string(a.head_dim));
  AWQD_ARG_CHECK(kName, a.num_tokens >= 0, "num_tokens=" + std::to_string(a.num_tokens));
  AWQD_ARG_CHECK(kName, a.num_kv_heads > 0 && a.num_heads > 0 && a.num_heads % a.num_kv_heads == 0,
                 "num_heads=" + std::to_string(a.num_heads) +
                     " num_kv_heads=" + std::to_string(a.num_kv_heads));
  AWQD_ARG_CHECK(kName, (a.q_norm_weight == nullptr) == (a.k_norm_weight == nullptr),
                 "q_norm_weight and k_norm_weight must be both set or both null");
  AWQD_ARG_CHECK(kName, a.q_out_stride >= a.num_heads * a.head_dim && a.q_out_stride % 8 == 0,
                 "q_out_stride=" + std::to_string(a.q_out_stride));
  AWQD_ARG_CHECK(kName,
                 a.num_tokens == 0 || (a.qkv && a.q_out && a.k_cache && a.v_cache && a.positions &&
                                       a.slot_mapping && a.inv_freq),
                 "null pointer");
  AWQD_ARG_CHECK(kName,
                 aligned16(a.qkv) && aligned16(a.q_out) && aligned16(a.k_cache) &&
                     aligned16(a.v_cache) && aligned16(a.q_norm_weight) &&
                     aligned16(a.k_norm_weight),
                 "buffers must be 16-byte aligned");
  if (a.num_tokens == 0) return;
  const int threads_per_head = a.head_dim / 16;
  const int total = (a.num_heads + 2 * a.num_kv_heads) * threads_per_head;
  const int threads = std::min(512, (total + kWarpSize - 1) / kWarpSize * kWarpSize);
  if (a.head_dim == 128) {
    launch_pdl(a.pdl, qkv_rope_cache_kernel<128>, dim3(a.num_tokens), dim3(threads), 0, stream, a);
  } else {
    launch_pdl(a.pdl, qkv_rope_cache_kernel<64>, dim3(a.num_tokens), dim3(threads), 0, stream, a);
  }
}

}  // namespace awqd::cuda
