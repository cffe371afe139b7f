// Paged attention kernels (decode and prefill) against the CPU reference cpu::paged_attention,
// on both kernel paths (sm_80+ and the forced sm_75 path), over batch sizes, context lengths,
// GQA ratios 1/4/7/8 (and > 16, which takes two query-head groups), head_dim 64 and 128,
// shuffled block tables and partial last blocks. Cache slots that no sequence owns, and the
// tail of each last block, hold NaN: a kernel that reads past a context fails.
//
// Tolerance. Scores are fp32 dot products of fp16 values (exact products, fp32 sums) on both
// sides; the kernels round the softmax weights P to fp16 before the P.V product (relative error
// <= 2^-11 per weight, so <= 2^-11 * mean|v| ~ 5e-4 absolute on N(0,1) values) and round the
// output to fp16 (2^-11 relative). We allow atol 1.5e-3 + rtol 5e-3 (10 fp16 ulps); an
// indexing or masking bug produces errors of order 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu_ops.h"
#include "engine/executor.h"
#include "engine/fp16.h"
#include "kernels/attention_decode.cuh"
#include "kernels/attention_prefill.cuh"
#include "kernels/kv_cache.cuh"
#include "kernels/launch.cuh"
#include "kernels/rope.cuh"
#include "tests/kernel_test_util.h"

#ifdef AWQD_TEST_EMULATED
#include "kernels/emu/emu_device.h"
#endif

namespace awqd {
namespace {

static_assert(cuda::kKvCacheBlockSize == kKvBlockSize, "kernels and engine disagree on KV blocks");

using test::all_close;
using test::as_half;
using test::KernelBuffer;

constexpr float kAtol = 1.5e-3f;
constexpr float kRtol = 5e-3f;
constexpr half_bits kHalfNaN = 0x7E00;

// A step's worth of paged-attention inputs: sequences with a cached context and new tokens.
struct Scenario {
  int heads = 0, kv_heads = 0, head_dim = 0;
  std::vector<int> ctx;     // [seqs] context length once the new tokens are cached
  std::vector<int> q_lens;  // [seqs] new tokens (the last q_len positions of the context)
  int num_blocks = 0, max_blocks = 0;
  std::vector<int> block_tables, cu_seqlens, positions;
  std::vector<half_bits> k_cache, v_cache, q;

  int seqs() const { return static_cast<int>(ctx.size()); }
  int tokens() const { return cu_seqlens.back(); }
  int max_ctx() const { return *std::max_element(ctx.begin(), ctx.end()); }
  std::string describe() const {
    std::string s = "seqs=" + std::to_string(seqs()) + " heads=" + std::to_string(heads) + "/" +
                    std::to_string(kv_heads) + " head_dim=" + std::to_string(head_dim) + " ctx=[";
    for (int b = 0; b < std::min(seqs(), 6); ++b) {
      s += (b ? "," : "") + std::to_string(ctx[b]) + "/" + std::to_string(q_lens[b]);
    }
    return s + (seqs() > 6 ? ",...]" : "]") + " (context/new)";
  }
};

Scenario make_scenario(int heads, int kv_heads, int head_dim, std::vector<int> ctx,
                       std::vector<int> q_lens, std::mt19937_64& rng, float q_scale) {
  Scenario s;
  s.heads = heads, s.kv_heads = kv_heads, s.head_dim = head_dim;
  s.ctx = std::move(ctx), s.q_lens = std::move(q_lens);
  int used = 0;
  for (int c : s.ctx) {
    used += (c + 15) / 16;
    s.max_blocks = std::max(s.max_blocks, (c + 15) / 16);
  }
  s.max_blocks += 1;  // an unused (-1) entry at the end of every table
  s.num_blocks = used + 3;
  std::vector<int> order(s.num_blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  s.block_tables.assign(static_cast<std::size_t>(s.seqs()) * s.max_blocks, -1);
  const std::size_t slice = static_cast<std::size_t>(16) * head_dim;
  s.k_cache.assign(static_cast<std::size_t>(s.num_blocks) * kv_heads * slice, kHalfNaN);
  s.v_cache = s.k_cache;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int next = 0;
  s.cu_seqlens = {0};
  for (int b = 0; b < s.seqs(); ++b) {
    for (int i = 0; i < (s.ctx[b] + 15) / 16; ++i) {
      const int blk = order[next++];
      s.block_tables[static_cast<std::size_t>(b) * s.max_blocks + i] = blk;
      const int rows = std::min(16, s.ctx[b] - 16 * i);  // the tail of a last block stays NaN
      for (int h = 0; h < kv_heads; ++h) {
        for (int r = 0; r < rows; ++r) {
          const std::size_t at = cuda::kv_cache_offset(blk, h, r, kv_heads, head_dim);
          for (int d = 0; d < head_dim; ++d) {
            s.k_cache[at + d] = float_to_half(normal(rng));
            s.v_cache[at + d] = float_to_half(normal(rng));
          }
        }
      }
    }
    s.cu_seqlens.push_back(s.cu_seqlens.back() + s.q_lens[b]);
    for (int i = 0; i < s.q_lens[b]; ++i) s.positions.push_back(s.ctx[b] - s.q_lens[b] + i);
  }
  s.q.resize(static_cast<std::size_t>(s.tokens()) * heads * head_dim);
  for (auto& h : s.q) h = float_to_half(q_scale * normal(rng));
  return s;
}

std::vector<float> reference(const Scenario& s) {
  const auto k = test::to_float(s.k_cache), v = test::to_float(s.v_cache), q = test::to_float(s.q);
  cpu::PagedKv cache;
  cache.k = const_cast<float*>(k.data());
  cache.v = const_cast<float*>(v.data());
  cache.num_kv_heads = s.kv_heads;
  cache.head_dim = s.head_dim;
  cache.block_size = 16;
  std::vector<float> out(q.size());
  cpu::paged_attention(q.data(), cache, s.cu_seqlens.data(), s.positions.data(),
                       s.block_tables.data(), s.max_blocks, s.seqs(), s.heads, out.data());
  return out;
}

const char* path_name(bool sm75) { return sm75 ? "sm75 path" : "sm80 path"; }

// Sets the kernel path for the scope of a test and restores the default afterwards.
class PathScope {
 public:
  explicit PathScope(bool sm75) : saved_(cuda::sm75_path_forced()) {
    cuda::set_force_sm75_path(sm75);
  }
  ~PathScope() { cuda::set_force_sm75_path(saved_); }

 private:
  bool saved_;
};

// ---- decode ----------------------------------------------------------------------------------

// The fields decode and prefill attention share, over a scenario's device copies (q and out:
// [tokens, heads x head_dim]).
template <class Args>
Args attention_args(const Scenario& s, KernelBuffer<half_bits>& q, KernelBuffer<half_bits>& k,
                    KernelBuffer<half_bits>& v, KernelBuffer<half_bits>& out,
                    KernelBuffer<int>& tables) {
  Args a;
  a.out = as_half<__half>(out);
  a.out_stride = s.heads * s.head_dim;
  a.q = as_half<const __half>(q);
  a.q_stride = s.heads * s.head_dim;
  a.k_cache = as_half<const __half>(k);
  a.v_cache = as_half<const __half>(v);
  a.block_tables = tables.get();
  a.max_blocks_per_seq = s.max_blocks;
  a.num_seqs = s.seqs();
  a.num_heads = s.heads;
  a.num_kv_heads = s.kv_heads;
  a.head_dim = s.head_dim;
  return a;
}

cuda::DecodeAttentionArgs decode_args(const Scenario& s, KernelBuffer<half_bits>& q,
                                      KernelBuffer<half_bits>& k, KernelBuffer<half_bits>& v,
                                      KernelBuffer<half_bits>& out, KernelBuffer<int>& ctx,
                                      KernelBuffer<int>& tables, KernelBuffer<unsigned char>& ws) {
  auto a = attention_args<cuda::DecodeAttentionArgs>(s, q, k, v, out, tables);
  a.context_lens = ctx.get();
  a.max_context_len = s.max_ctx();
  a.workspace = ws.get();
  a.workspace_bytes = ws.size();
  return a;
}

struct DecodeCase {
  int heads, kv_heads, head_dim;
  std::vector<int> ctx;
  int splits = 0;  // 0: automatic
  float q_scale = 1.0f;
  int max_context_hint = 0;  // > 0: a too-small max_context_len (the kernel must still be right)
};

void run_decode(const DecodeCase& c, bool sm75, std::mt19937_64& rng) {
  const Scenario s = make_scenario(c.heads, c.kv_heads, c.head_dim, c.ctx,
                                   std::vector<int>(c.ctx.size(), 1), rng, c.q_scale);
  PathScope path(sm75);
  KernelBuffer<half_bits> dq(s.q), dk(s.k_cache), dv(s.v_cache), dout(s.q.size());
  KernelBuffer<int> dctx(s.ctx), dtables(s.block_tables);
  KernelBuffer<unsigned char> workspace(cuda::decode_attention_workspace_bytes(c.head_dim));
  workspace.fill_bytes(0);
  cuda::DecodeAttentionArgs a = decode_args(s, dq, dk, dv, dout, dctx, dtables, workspace);
  if (c.max_context_hint > 0) a.max_context_len = c.max_context_hint;
  a.num_splits = c.splits;
  // The sm80 path runs the cp.async variant on every case (auto would take the registers one,
  // which the sm75 path runs, for the long ones).
  if (!sm75) a.staging = cuda::DecodeAttentionArgs::Staging::kCpAsync;
  const std::string what = std::string("decode ") + path_name(sm75) + " " + s.describe() +
                           " splits=" + std::to_string(cuda::decode_attention_splits(a));
  cuda::decode_attention(a, nullptr);
  const auto first = dout.download();
  EXPECT_TRUE(all_close(what, test::to_float(first), reference(s), kAtol, kRtol));
  // Again into a poisoned output: the counters were reset, and the result is bit-identical.
  dout.poison();
  cuda::decode_attention(a, nullptr);
  EXPECT_TRUE(first == dout.download()) << what << ": a second launch gave different bits";
}

std::vector<int> random_lengths(int n, int lo, int hi, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<int> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

class DecodeAttention : public ::testing::TestWithParam<bool> {};

TEST_P(DecodeAttention, MatchesReference) {
  AWQD_KERNEL_TEST_PRELUDE();
  const bool sm75 = GetParam();
  std::mt19937_64 rng(sm75 ? 11 : 12);
#ifdef AWQD_TEST_EMULATED
  emu::device().multiprocessors = 4;  // small "GPU": the automatic choice splits short contexts
#endif
  std::vector<DecodeCase> cases = {
      {8, 2, 128, {1, 17, 250}},                   // ratio 4, partial blocks, auto split
      {4, 4, 64, {33, 100}, 3},                    // ratio 1 (MHA), forced 3 splits
      {14, 2, 64, {16, 47}, 0, 3.0f},              // ratio 7, sharp softmax
      {8, 1, 128, {130}, 5},                       // ratio 8
      {20, 1, 64, {40, 9}, 2},                     // ratio 20: two query-head groups
      {4, 1, 128, random_lengths(5, 1, 70, rng)},  // ragged batch
      {8, 2, 64, {300, 20}, 4, 1.0f, 100},         // max_context_len below the real context
      {8, 1, 128, {250}},  // one unit: the small-batch split rule (4 splits on 4 "SMs")
      // More splits than the merge requests at once (kMergeBatch = 16): several rescaled
      // batches per thread, with one thread per item (ratio 16 and 4 at 128) and with 8
      // threads sharing an item (ratio 1 at 64). One unit each: the emulated 4-SM device's
      // workspace holds 64 partials.
      {16, 1, 128, {1000}, 40},
      {4, 1, 128, {1500}, 33, 2.0f},
      {1, 1, 64, {600}, 20},
  };
  if (!test::quick()) {
    cases.push_back({32, 8, 128, {16384}});  // batch 1, 16k
    cases.push_back({32, 8, 128, random_lengths(16, 1, 4096, rng)});
    cases.push_back({32, 8, 128, random_lengths(64, 1, 2048, rng)});
    cases.push_back({32, 8, 128, random_lengths(256, 1, 600, rng)});              // batch 256
    cases.push_back({28, 4, 128, random_lengths(16, 1000, 9000, rng), 0, 2.0f});  // ratio 7
    cases.push_back({32, 32, 128, random_lengths(8, 1, 3000, rng)});              // ratio 1
    cases.push_back({64, 8, 128, random_lengths(4, 100, 5000, rng)});             // ratio 8
    cases.push_back({16, 8, 64, random_lengths(32, 1, 5000, rng)});               // head_dim 64
    cases.push_back({14, 2, 64, {16384, 1, 17}});
    cases.push_back({32, 8, 128, {4096, 4095, 4097}, 64});  // max splits
    // Small batches: one CTA per SM, up to 16 splits of up to 16 blocks (head_dim 128 and 64),
    // 4 splits with ragged contexts, a short last block.
    cases.push_back({32, 8, 128, {4096}});
    cases.push_back({16, 8, 64, {2048}});
    cases.push_back({32, 8, 128, random_lengths(4, 1, 1024, rng)});
    cases.push_back({28, 4, 128, {4000, 2}, 0, 2.0f});
  }
  for (const auto& c : cases) run_decode(c, sm75, rng);
}

INSTANTIATE_TEST_SUITE_P(Paths, DecodeAttention, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Sm75" : "Sm80"; });

// ---- prefill ---------------------------------------------------------------------------------

struct PrefillCase {
  int heads, kv_heads, head_dim;
  std::vector<int> ctx, q_lens;  // q_len <= ctx: the last q_len tokens are new
  float q_scale = 1.0f;
};

void run_prefill(const PrefillCase& c, bool sm75, std::mt19937_64& rng) {
  const Scenario s =
      make_scenario(c.heads, c.kv_heads, c.head_dim, c.ctx, c.q_lens, rng, c.q_scale);
  PathScope path(sm75);
  KernelBuffer<half_bits> dq(s.q), dk(s.k_cache), dv(s.v_cache), dout(s.q.size());
  KernelBuffer<int> dcu(s.cu_seqlens), dpos(s.positions), dtables(s.block_tables);
  auto a = attention_args<cuda::PrefillAttentionArgs>(s, dq, dk, dv, dout, dtables);
  a.cu_seqlens_q = dcu.get();
  a.positions = dpos.get();
  a.num_tokens = s.tokens();
  cuda::prefill_attention(a, nullptr);
  const std::string what = std::string("prefill ") + path_name(sm75) + " " + s.describe();
  EXPECT_TRUE(all_close(what, test::to_float(dout.download()), reference(s), kAtol, kRtol));
}

class PrefillAttention : public ::testing::TestWithParam<bool> {};

TEST_P(PrefillAttention, MatchesReference) {
  AWQD_KERNEL_TEST_PRELUDE();
  const bool sm75 = GetParam();
  std::mt19937_64 rng(sm75 ? 21 : 22);
  std::vector<PrefillCase> cases = {
      {8, 2, 128, {1}, {1}},                         // one token
      {8, 2, 128, {100}, {100}},                     // whole prompt, ratio 4
      {4, 4, 64, {70}, {70}, 3.0f},                  // MHA, sharp softmax
      {14, 2, 64, {163 + 37}, {37}},                 // chunk after a cached prefix, ratio 7
      {8, 1, 128, {40, 1, 90, 17}, {40, 1, 25, 3}},  // mixed prefill/decode, ratio 8
      {20, 1, 64, {33}, {33}},                       // ratio 20
  };
  if (!test::quick()) {
    cases.push_back({32, 8, 128, {4096}, {4096}});
    cases.push_back({32, 8, 128, {3000, 2048, 600}, {1000, 2048, 1}});
    cases.push_back({28, 4, 128, {1500, 777}, {1500, 300}, 2.0f});
    cases.push_back({32, 32, 128, {513}, {513}});
    cases.push_back({64, 8, 128, {1024, 64}, {512, 64}});
    cases.push_back({16, 8, 64, {2000, 100, 5}, {2000, 100, 5}});
    std::vector<int> ctx = random_lengths(40, 1, 700, rng), q_lens(40);
    for (int i = 0; i < 40; ++i) q_lens[i] = 1 + static_cast<int>(rng() % ctx[i]);
    cases.push_back({32, 8, 128, ctx, q_lens});
  }
  for (const auto& c : cases) run_prefill(c, sm75, rng);
}

INSTANTIATE_TEST_SUITE_P(Paths, PrefillAttention, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Sm75" : "Sm80"; });

// Programmatic Dependent Launch as the engine uses it: qkv_rope_cache writes this step's token
// (q, and K/V into each sequence's last block) and decode attention, launched right after it with
// pdl, prefetches the other blocks before its grid_dependency_wait. The cache slots of this
// step's tokens start as NaN, and ahead of both runs a long, GPU-filling decode attention (batch
// 1 x 16k, triggering its dependents at its start), so that on an sm_90 GPU the attention under
// test is resident and prefetching while the rope kernel has not run yet: reading the last block
// before the wait gives NaN. The result must match the CPU reference on the memory as the rope
// kernel left it, and be bit-identical to the same launch without PDL. (Without sm_90 or in the
// emulator the launches are ordinary ones: the test then checks the same results.) Checked by
// mutation on an H100: with the last block requested before the wait, this test fails.
void check_pdl_after_rope(const std::vector<int>& ctx, int long_ctx, std::mt19937_64& rng) {
  constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128;
  const int seqs = static_cast<int>(ctx.size());
  Scenario s = make_scenario(kHeads, kKvHeads, kHeadDim, ctx, std::vector<int>(seqs, 1), rng, 1.0f);
  // This step's token: its slot, its position; the cache holds NaN there until the rope kernel.
  std::vector<int> slots(seqs), positions(seqs);
  for (int b = 0; b < seqs; ++b) {
    positions[b] = ctx[b] - 1;
    slots[b] = s.block_tables[static_cast<std::size_t>(b) * s.max_blocks + positions[b] / 16] * 16 +
               positions[b] % 16;
    for (int h = 0; h < kKvHeads; ++h) {
      const std::size_t at = cuda::kv_cache_offset(slots[b] / 16, h, slots[b] % 16, kKvHeads, kHeadDim);
      std::fill_n(s.k_cache.begin() + static_cast<std::ptrdiff_t>(at), kHeadDim, kHalfNaN);
      std::fill_n(s.v_cache.begin() + static_cast<std::ptrdiff_t>(at), kHeadDim, kHalfNaN);
    }
  }
  const int qkv_n = (kHeads + 2 * kKvHeads) * kHeadDim;
  std::vector<half_bits> qkv(static_cast<std::size_t>(seqs) * qkv_n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& h : qkv) h = float_to_half(normal(rng));
  std::vector<float> inv_freq(kHeadDim / 2);
  for (int i = 0; i < kHeadDim / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / kHeadDim);

  // The long attention ahead: its own cache, q and workspace.
  Scenario big = make_scenario(kHeads, kKvHeads, kHeadDim, {long_ctx}, {1}, rng, 1.0f);
  KernelBuffer<half_bits> big_q(big.q), big_k(big.k_cache), big_v(big.v_cache), big_out(big.q.size());
  KernelBuffer<int> big_ctx(big.ctx), big_tables(big.block_tables);
  KernelBuffer<unsigned char> big_ws(cuda::decode_attention_workspace_bytes(kHeadDim));
  big_ws.fill_bytes(0);
  const cuda::DecodeAttentionArgs ahead =
      decode_args(big, big_q, big_k, big_v, big_out, big_ctx, big_tables, big_ws);

  cudaStream_t stream = nullptr;
#ifndef AWQD_TEST_EMULATED
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
#endif
  std::vector<std::vector<half_bits>> outs;
  // Run 0 only loads the kernels' modules (lazy loading serializes a kernel's first launch, which
  // would hide the overlap); runs 1 and 2 are checked, with and without PDL.
  for (int run = 0; run < 3; ++run) {
    const bool pdl = run < 2;
    KernelBuffer<half_bits> dqkv(qkv), dq(static_cast<std::size_t>(seqs) * kHeads * kHeadDim);
    KernelBuffer<half_bits> dk(s.k_cache), dv(s.v_cache), dout(dq.size());
    KernelBuffer<int> dctx(s.ctx), dtables(s.block_tables), dpos(positions), dslots(slots);
    KernelBuffer<float> dfreq(inv_freq);
    KernelBuffer<unsigned char> ws(cuda::decode_attention_workspace_bytes(kHeadDim));
    ws.fill_bytes(0);
    cuda::QkvRopeCacheArgs rope;
    rope.qkv = as_half<const __half>(dqkv);
    rope.q_out = as_half<__half>(dq);
    rope.q_out_stride = kHeads * kHeadDim;
    rope.k_cache = as_half<__half>(dk);
    rope.v_cache = as_half<__half>(dv);
    rope.positions = dpos.get();
    rope.slot_mapping = dslots.get();
    rope.inv_freq = dfreq.get();
    rope.num_tokens = seqs;
    rope.num_heads = kHeads;
    rope.num_kv_heads = kKvHeads;
    rope.head_dim = kHeadDim;
    rope.pdl = pdl;
    cuda::DecodeAttentionArgs a = decode_args(s, dq, dk, dv, dout, dctx, dtables, ws);
    a.pdl = pdl;
    cuda::decode_attention(ahead, stream);
    cuda::qkv_rope_cache(rope, stream);
    cuda::decode_attention(a, stream);
#ifndef AWQD_TEST_EMULATED
    CUDA_CHECK(cudaStreamSynchronize(stream));
#endif
    if (run == 0) continue;
    // The reference reads the memory the rope kernel left: q_out and the filled cache.
    Scenario done = s;
    done.q = dq.download();
    done.k_cache = dk.download();
    done.v_cache = dv.download();
    outs.push_back(dout.download());
    EXPECT_TRUE(all_close(std::string("decode after rope, pdl=") + (pdl ? "on " : "off ") + s.describe(),
                          test::to_float(outs.back()), reference(done), kAtol, kRtol));
  }
  EXPECT_TRUE(outs[0] == outs[1]) << "PDL changed the bits of the result";
#ifndef AWQD_TEST_EMULATED
  CUDA_CHECK(cudaStreamDestroy(stream));
#endif
}

TEST(DecodeAttentionPdl, ThisStepsTokenIsReadAfterTheWait) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(21);
#ifdef AWQD_TEST_EMULATED
  check_pdl_after_rope({1, 17, 100, 33}, 64, rng);
#else
  check_pdl_after_rope({1, 2, 15, 16, 17, 31, 32, 33, 100, 257, 1000, 4096, 4097}, 16384, rng);
  // Small batches, split finely: each split's copies before the wait skip the last block.
  check_pdl_after_rope({4096}, 16384, rng);
  check_pdl_after_rope({100, 1000, 257, 17}, 16384, rng);
#endif
}

// The split rule (kernels/attention_decode.cu, choose_split) on a 132-SM device: batches whose
// (sequence, KV head) units fill under half the SMs get one CTA per SM and at least one KV block
// per warp, at most 32 splits; larger ones as many splits as fit one wave of two CTAs per SM
// (docs/PERF.md runs 19, 23, 27, 67); and the staging variant that follows from the split.
// Emulated build only: on a GPU the SM count is the card's.
TEST(DecodeAttentionSplits, FollowTheSmCountRule) {
#ifndef AWQD_TEST_EMULATED
  GTEST_SKIP() << "checks the rule against the emulated device's SM count";
#else
  emu::device().multiprocessors = 132;
  auto args = [](int seqs, int kv_heads, int ctx) {
    cuda::DecodeAttentionArgs a;
    a.num_seqs = seqs;
    a.num_heads = 4 * kv_heads;
    a.num_kv_heads = kv_heads;
    a.head_dim = 128;
    a.max_context_len = ctx;
    a.max_blocks_per_seq = (ctx + 15) / 16;
    return a;
  };
  auto splits = [&](int seqs, int kv_heads, int ctx) {
    return cuda::decode_attention_splits(args(seqs, kv_heads, ctx));
  };
  auto registers = [&](int seqs, int kv_heads, int ctx) {
    return cuda::decode_attention_register_staging(args(seqs, kv_heads, ctx));
  };
  EXPECT_EQ(splits(1, 8, 16384), 16);  // 8 units: 132 / 8
  EXPECT_EQ(splits(1, 8, 512), 8);     // 32 KV blocks: one per warp of 4
  EXPECT_EQ(splits(8, 8, 4096), 2);    // 64 units
  EXPECT_EQ(splits(1, 4, 16384), 32);  // 4 units (8 KV heads at tensor parallel 2): 33, capped
  EXPECT_EQ(splits(16, 8, 4096), 2);   // 128 units: one wave of 2 CTAs per SM, 264 / 128
  EXPECT_EQ(splits(16, 8, 512), 2);    // 32 KV blocks: at least 16 per split
  EXPECT_EQ(splits(12, 8, 4096), 2);   // 96 units: 264 / 96
  EXPECT_EQ(splits(9, 8, 4096), 3);    // 72 units: 264 / 72
  EXPECT_EQ(splits(32, 8, 4096), 1);   // 256 units: one wave already
  EXPECT_EQ(splits(64, 8, 512), 1);
  EXPECT_EQ(splits(64, 8, 4096), 1);
  // The staging variant (docs/PERF.md run 70): registers from 16 blocks per warp, or 8 on a grid
  // of more than one CTA per SM; cp.async below.
  EXPECT_TRUE(registers(1, 8, 16384));   // 16 splits of 64 blocks
  EXPECT_FALSE(registers(1, 8, 4096));   // 16 splits of 16 blocks: 4 per warp
  EXPECT_FALSE(registers(2, 8, 4096));   // 8 splits of 32 blocks, 128 CTAs on 132 SMs
  EXPECT_TRUE(registers(8, 8, 4096));    // 2 splits of 128 blocks
  EXPECT_TRUE(registers(64, 8, 512));    // 1 split of 32 blocks, 512 CTAs
  EXPECT_FALSE(registers(16, 8, 512));   // 2 splits of 16 blocks
  cuda::DecodeAttentionArgs forced = args(64, 8, 4096);
  forced.staging = cuda::DecodeAttentionArgs::Staging::kCpAsync;
  EXPECT_FALSE(cuda::decode_attention_register_staging(forced));
  emu::device().multiprocessors = 4;
#endif
}

TEST(DecodeAttentionArgs, RejectsBadShapes) {
  AWQD_KERNEL_TEST_PRELUDE();
  cuda::DecodeAttentionArgs a;
  a.num_seqs = 1;
  a.num_heads = 6;
  a.num_kv_heads = 4;
  a.head_dim = 128;
  EXPECT_THROW(cuda::decode_attention(a, nullptr), std::invalid_argument);
  a.num_heads = 8;
  a.head_dim = 96;
  EXPECT_THROW(cuda::decode_attention(a, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace awqd
