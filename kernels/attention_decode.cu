// Decode attention launcher: argument checks, the split heuristic, workspace layout, dispatch to
// the <head_dim, path> variants (kernels/attention_decode_kernel.cuh).
#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/attention_decode.cuh"
#include "kernels/attention_decode_kernel.cuh"
#include "kernels/common.cuh"

namespace awqd::cuda {

namespace {

constexpr int kCtasPerSm = 2;        // resident decode CTAs per SM (shared memory bound)
constexpr int kWorkspaceWaves = 4;   // the workspace holds partials for this many waves of CTAs
constexpr int kMinSplitBlocks = 16;  // 4 blocks per warp: fewer partials to merge
// At most this many automatic splits: the last CTA of a unit merges every split's partial, so
// beyond it the merge costs more than the parallelism gives. H100, batch 1, 8 KV heads x 128
// (docs/PERF.md): context 16384, 64 splits 40.3 us, 8-32 splits 35.5-35.7 us; context 4096, 16
// splits 13.8 us, 32 16.1, 64 21.9.
constexpr int kMaxAutoSplits = 32;

// Workspace capacity, a function of the device only: automatic splits keep units * splits within
// one wave (kCtasPerSm * SMs), far inside it; the rest is for forced split counts (tests,
// bench_attention's sweep) up to 2 * target partial slots and target counters.
int target_ctas() { return kWorkspaceWaves * kCtasPerSm * current_sm_count(); }

struct WorkspaceLayout {
  std::size_t counters = 0, part_o = 0, part_m = 0, part_l = 0, total = 0;
  int max_units = 0, max_slots = 0;
};

WorkspaceLayout workspace_layout(int head_dim) {
  WorkspaceLayout w;
  w.max_units = target_ctas();
  w.max_slots = 2 * target_ctas();
  auto align = [](std::size_t x) { return (x + 255) / 256 * 256; };
  w.counters = 0;
  w.part_o = align(static_cast<std::size_t>(w.max_units) * sizeof(int));
  w.part_m = w.part_o + align(static_cast<std::size_t>(w.max_slots) * decode::kRows * head_dim * 4);
  w.part_l = w.part_m + align(static_cast<std::size_t>(w.max_slots) * decode::kRows * 4);
  w.total = w.part_l + align(static_cast<std::size_t>(w.max_slots) * decode::kRows * 4);
  return w;
}

int groups_of(const DecodeAttentionArgs& a) {
  const int ratio = a.num_heads / a.num_kv_heads;
  return (ratio + decode::kRows - 1) / decode::kRows;
}

// (splits, blocks per split) for these arguments.
std::pair<int, int> choose_split(const DecodeAttentionArgs& a) {
  const int max_blocks = std::max(1, (a.max_context_len + 15) / 16);
  const int units = a.num_seqs * a.num_kv_heads * groups_of(a);
  int splits = a.num_splits;
  if (splits <= 0) {
    const int sms = current_sm_count();
    if (2 * units <= sms) {
      // Too few units to fill half the GPU (batch 1-8 of Llama-3-8B's 8 KV heads): one CTA per
      // SM, at least one KV block per warp. H100, batch 1 (run 23): context 512 best at 8 splits
      // (7.8 us; 2 splits 9.4), 4096 at 16 (13.4), 16384 at 16 (33.1 us = 83 % of copy
      // bandwidth; the 4-wave rule below chose 32: 34.8); batches 2-8 (run 27): the best split
      // or within 4 % of it at 512-16384 tokens, 3-9 % faster than the 4-wave rule from 4096.
      splits = std::min({sms / units, kMaxAutoSplits, std::max(1, max_blocks / decode::kWarps)});
    } else {
      // As many splits as keep the grid within one wave of resident CTAs (none past it). H200,
      // 8 KV heads x 128 (docs/PERF.md run 67): batch 64 x 512 tokens (512 units) 44.8 us with
      // one split against 53.2 with the two the earlier four-wave rule chose; batch 16 (128
      // units) best at 2 splits (one wave) from 4096 tokens on, while 3 (1.45 waves) lost 10 %
      // to the second wave's tail (16 x 16384: 322 us against 291).
      splits = std::min({kCtasPerSm * sms / units, kMaxAutoSplits,
                         (max_blocks + kMinSplitBlocks - 1) / kMinSplitBlocks});
      splits = std::max(splits, 1);
    }
  }
  splits = std::min(splits, max_blocks);
  const int split_blocks = (max_blocks + splits - 1) / splits;
  return {(max_blocks + split_blocks - 1) / split_blocks, split_blocks};
}

// Whether the CTAs of this split stage their KV blocks through registers (else cp.async).
bool register_staging(const DecodeAttentionArgs& a, int splits, int split_blocks) {
  using Staging = DecodeAttentionArgs::Staging;
  if (use_sm75_path() || a.staging == Staging::kRegisters) return true;
  if (a.staging == Staging::kCpAsync) return false;
  // H200, docs/PERF.md run 70 (8 KV heads x 128): registers ahead from 16 blocks per warp at any
  // grid size (batch 4-8 x 4096, 1-4 x 16384: 0-9 %) and from 8 with more than one CTA per SM
  // (64 x 512: 40.7 / 39.6 us against 44.8 / 40.9), behind at 8 on a grid of one CTA per SM
  // (2 x 4096: 16.5 against 15.7 with PDL) and at 4 (16 x 512, 1 x 4096).
  const int blocks_per_warp = split_blocks / decode::kWarps;
  const long long ctas =
      static_cast<long long>(splits) * a.num_seqs * a.num_kv_heads * groups_of(a);
  return blocks_per_warp >= 16 || (blocks_per_warp >= 8 && ctas > current_sm_count());
}

}  // namespace

std::size_t decode_attention_workspace_bytes(int head_dim) {
  return workspace_layout(head_dim).total;
}

int decode_attention_splits(const DecodeAttentionArgs& a) { return choose_split(a).first; }

bool decode_attention_register_staging(const DecodeAttentionArgs& a) {
  const auto [splits, split_blocks] = choose_split(a);
  return register_staging(a, splits, split_blocks);
}

void decode_attention(const DecodeAttentionArgs& a, cudaStream_t stream) {
  constexpr const char* kName = "decode_attention";
  AWQD_ARG_CHECK(kName, a.head_dim == 64 || a.head_dim == 128,
                 "head_dim=" + std::to_string(a.head_dim));
  AWQD_ARG_CHECK(kName, a.num_seqs >= 0 && a.num_seqs <= 65535,
                 "num_seqs=" + std::to_string(a.num_seqs));
  AWQD_ARG_CHECK(kName, a.num_kv_heads > 0 && a.num_heads > 0 && a.num_heads % a.num_kv_heads == 0,
                 "num_heads=" + std::to_string(a.num_heads) +
                     " num_kv_heads=" + std::to_string(a.num_kv_heads));
  AWQD_ARG_CHECK(
      kName,
      a.max_context_len >= 0 && a.max_context_len <= a.max_blocks_per_seq * kKvCacheBlockSize,
      "max_context_len=" + std::to_string(a.max_context_len) +
          " max_blocks_per_seq=" + std::to_string(a.max_blocks_per_seq));
  AWQD_ARG_CHECK(
      kName,
      a.q_stride >= a.num_heads * a.head_dim && a.q_stride % 8 == 0 &&
          a.out_stride >= a.num_heads * a.head_dim && a.out_stride % 8 == 0,
      "q_stride=" + std::to_string(a.q_stride) + " out_stride=" + std::to_string(a.out_stride));
  AWQD_ARG_CHECK(kName, a.num_splits >= 0 && a.num_splits <= decode::kMaxSplits,
                 "num_splits=" + std::to_string(a.num_splits));
  if (a.num_seqs == 0) return;
  AWQD_ARG_CHECK(kName, a.out && a.q && a.k_cache && a.v_cache && a.context_lens && a.block_tables,
                 "null pointer");
  AWQD_ARG_CHECK(kName,
                 aligned16(a.out) && aligned16(a.q) && aligned16(a.k_cache) &&
                     aligned16(a.v_cache) && aligned16(a.workspace),
                 "buffers must be 16-byte aligned");
  const auto [splits, split_blocks] = choose_split(a);
  const int groups = groups_of(a);
  const int units = a.num_seqs * a.num_kv_heads * groups;
  const WorkspaceLayout w = workspace_layout(a.head_dim);
  if (splits > 1) {
    AWQD_ARG_CHECK(kName, a.workspace != nullptr && a.workspace_bytes >= w.total,
                   "workspace of " + std::to_string(a.workspace_bytes) + " bytes, need " +
                       std::to_string(w.total));
    AWQD_ARG_CHECK(kName, units <= w.max_units && units * splits <= w.max_slots,
                   "forced num_splits=" + std::to_string(splits) + " exceeds the workspace for " +
                       std::to_string(units) + " units");
  }
  auto* base = static_cast<unsigned char*>(a.workspace);
  decode::Params p;
  p.out = a.out;
  p.out_stride = a.out_stride;
  p.q = a.q;
  p.q_stride = a.q_stride;
  p.k_cache = a.k_cache;
  p.v_cache = a.v_cache;
  p.context_lens = a.context_lens;
  p.block_tables = a.block_tables;
  p.max_blocks_per_seq = a.max_blocks_per_seq;
  p.num_kv_heads = a.num_kv_heads;
  p.ratio = a.num_heads / a.num_kv_heads;
  p.groups = groups;
  p.split_blocks = split_blocks;
  p.scale_log2 =
      static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(a.head_dim)));
  p.counters = base ? reinterpret_cast<int*>(base + w.counters) : nullptr;
  p.part_o = base ? reinterpret_cast<float*>(base + w.part_o) : nullptr;
  p.part_m = base ? reinterpret_cast<float*>(base + w.part_m) : nullptr;
  p.part_l = base ? reinterpret_cast<float*>(base + w.part_l) : nullptr;
  const dim3 grid(splits, a.num_kv_heads * groups, a.num_seqs);
  const bool registers = register_staging(a, splits, split_blocks);
  if (a.head_dim == 128) {
    registers ? decode::launch_decode<128, true>(p, grid, a.pdl, stream)
              : decode::launch_decode<128, false>(p, grid, a.pdl, stream);
  } else {
    registers ? decode::launch_decode<64, true>(p, grid, a.pdl, stream)
              : decode::launch_decode<64, false>(p, grid, a.pdl, stream);
  }
}

}  // namespace awqd::cuda
