// Prefill attention launcher: argument checks, grid sizing, dispatch to the <head_dim, path>
// variants (kernels/attention_prefill_kernel.cuh).
#include <cmath>
#include <string>

#include "kernels/attention_prefill.cuh"
#include "kernels/attention_prefill_kernel.cuh"
#include "kernels/common.cuh"

namespace awqd::cuda {

void prefill_attention(const PrefillAttentionArgs& a, cudaStream_t stream) {
  constexpr const char* kName = "prefill_attention";
  AWQD_ARG_CHECK(kName, a.head_dim == 64 || a.head_dim == 128,
                 "head_dim=" + std::to_string(a.head_dim));
  AWQD_ARG_CHECK(
      kName, a.num_seqs >= 0 && a.num_tokens >= 0,
      "num_seqs=" + std::to_string(a.num_seqs) + " num_tokens=" + std::to_string(a.num_tokens));
  AWQD_ARG_CHECK(kName,
                 a.num_kv_heads > 0 && a.num_kv_heads <= 65535 && a.num_heads > 0 &&
                     a.num_heads % a.num_kv_heads == 0,
                 "num_heads=" + std::to_string(a.num_heads) +
                     " num_kv_heads=" + std::to_string(a.num_kv_heads));
  AWQD_ARG_CHECK(
      kName,
      a.q_stride >= a.num_heads * a.head_dim && a.q_stride % 8 == 0 &&
          a.out_stride >= a.num_heads * a.head_dim && a.out_stride % 8 == 0,
      "q_stride=" + std::to_string(a.q_stride) + " out_stride=" + std::to_string(a.out_stride));
  AWQD_ARG_CHECK(kName, a.max_blocks_per_seq > 0,
                 "max_blocks_per_seq=" + std::to_string(a.max_blocks_per_seq));
  if (a.num_seqs == 0 || a.num_tokens == 0) return;
  AWQD_ARG_CHECK(
      kName,
      a.out && a.q && a.k_cache && a.v_cache && a.cu_seqlens_q && a.positions && a.block_tables,
      "null pointer");
  AWQD_ARG_CHECK(kName,
                 aligned16(a.out) && aligned16(a.q) && aligned16(a.k_cache) && aligned16(a.v_cache),
                 "buffers must be 16-byte aligned");
  prefill::Params p;
  p.out = a.out;
  p.out_stride = a.out_stride;
  p.q = a.q;
  p.q_stride = a.q_stride;
  p.k_cache = a.k_cache;
  p.v_cache = a.v_cache;
  p.cu_seqlens_q = a.cu_seqlens_q;
  p.positions = a.positions;
  p.block_tables = a.block_tables;
  p.max_blocks_per_seq = a.max_blocks_per_seq;
  p.num_seqs = a.num_seqs;
  p.num_kv_heads = a.num_kv_heads;
  p.ratio = a.num_heads / a.num_kv_heads;
  p.scale_log2 =
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(a.head_dim)));
  // Tiles over all sequences: sum of ceil(q_len * ratio / 64) <= tokens * ratio / 64 + seqs.
  const long long tiles =
      (static_cast<long long>(a.num_tokens) * p.ratio + prefill::kRowsPerCta - 1) /
          prefill::kRowsPerCta +
      a.num_seqs;
  AWQD_ARG_CHECK(kName, tiles < (1ll << 31), "too many tokens");
  const dim3 grid(static_cast<unsigned>(tiles), a.num_kv_heads);
  const bool sm75 = use_sm75_path();
  if (a.head_dim == 128) {
    sm75 ? prefill::launch_prefill<128, true>(p, grid, stream)
         : prefill::launch_prefill<128, false>(p, grid, stream);
  } else {
    sm75 ? prefill::launch_prefill<64, true>(p, grid, stream)
         : prefill::launch_prefill<64, false>(p, grid, stream);
  }
}

}  // namespace awqd::cuda
