// The fused elementwise kernels against the CPU reference operators (engine/cpu_ops.h):
// RMSNorm (+ residual add), qk-norm + RoPE + KV-cache write, SiLU(gate) * up, embedding gather.
//
// Tolerances. Inputs are fp16; kernels and references compute in fp32, so the only systematic
// difference is the final rounding to fp16 (half an ulp, 2^-11 relative) plus a few fp32 ulps
// (rsqrtf, sincosf and expf differ from libm by <= 2 ulp). We allow rtol 2e-3 (4 fp16 ulps) and
// atol 1e-3 (for values near zero, where the relative step is meaningless). Copies (V into the
// cache, embeddings) and the rounded residual sum must match bit for bit.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu_ops.h"
#include "engine/fp16.h"
#include "engine/model_config.h"
#include "kernels/activation.cuh"
#include "kernels/embedding.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "tests/kernel_test_util.h"

namespace awqd {
namespace {

using test::all_close;
using test::as_half;
using test::KernelBuffer;
using test::random_half;
using test::to_float;

constexpr float kAtol = 1e-3f;
constexpr float kRtol = 2e-3f;

TEST(RmsNorm, MatchesReferenceWithAndWithoutResidual) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(1);
  struct Shape {
    int rows, hidden;
  };
  std::vector<Shape> shapes = {{1, 8}, {3, 64}, {5, 896}, {2, 4096}, {7, 5120}};
  if (!test::quick())
    shapes.insert(shapes.end(), {{64, 4096}, {257, 3584}, {33, 8192}, {2, 16384}});
  for (const auto& [rows, hidden] : shapes) {
    for (const bool add : {false, true}) {
      const std::string what = std::string(add ? "add_rmsnorm" : "rmsnorm") +
                               " rows=" + std::to_string(rows) +
                               " hidden=" + std::to_string(hidden);
      const auto x = random_half(static_cast<std::size_t>(rows) * hidden, rng, 2.0f);
      const auto res = random_half(x.size(), rng, 4.0f);
      auto w = random_half(hidden, rng, 0.5f);
      const float eps = 1e-5f;
      KernelBuffer<half_bits> dx(x), dres(res), dw(w), dout(x.size());
      if (add) {
        cuda::add_rmsnorm(as_half<__half>(dout), as_half<__half>(dres), as_half<__half>(dx),
                          as_half<__half>(dw), rows, hidden, eps, nullptr);
      } else {
        cuda::rmsnorm(as_half<__half>(dout), as_half<__half>(dx), as_half<__half>(dw), rows, hidden,
                      eps, nullptr);
      }
      std::vector<float> in = to_float(x);
      if (add) {
        const auto r = to_float(res);
        for (std::size_t i = 0; i < in.size(); ++i) in[i] = round_to_half(in[i] + r[i]);
        EXPECT_TRUE(all_close(what + " residual", to_float(dres.download()), in, 0, 0));
      }
      std::vector<float> ref(in.size());
      cpu::rms_norm(in.data(), to_float(w).data(), ref.data(), rows, hidden, eps);
      EXPECT_TRUE(all_close(what, to_float(dout.download()), ref, kAtol, kRtol));
    }
  }
}

struct RopeCase {
  int tokens, heads, kv_heads, head_dim;
  bool qk_norm;
  RopeScaling::Type scaling;
};

std::string describe(const RopeCase& c) {
  return "tokens=" + std::to_string(c.tokens) + " heads=" + std::to_string(c.heads) + "/" +
         std::to_string(c.kv_heads) + " head_dim=" + std::to_string(c.head_dim) +
         (c.qk_norm ? " qk_norm" : "") +
         (c.scaling == RopeScaling::Type::kLlama3   ? " llama3"
          : c.scaling == RopeScaling::Type::kLinear ? " linear"
                                                    : "");
}

TEST(QkvRopeCache, MatchesReference) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(2);
  std::vector<RopeCase> cases = {
      {1, 32, 8, 128, false, RopeScaling::Type::kLlama3},
      {7, 8, 8, 64, false, RopeScaling::Type::kNone},
      {5, 16, 8, 128, true, RopeScaling::Type::kNone},
      {3, 14, 2, 64, true, RopeScaling::Type::kLinear},
      {9, 28, 4, 128, false, RopeScaling::Type::kNone},
  };
  if (!test::quick()) {
    cases.insert(cases.end(), {{64, 32, 8, 128, true, RopeScaling::Type::kLlama3},
                               {300, 64, 8, 128, false, RopeScaling::Type::kNone},
                               {100, 40, 8, 128, true, RopeScaling::Type::kNone}});
  }
  for (const auto& c : cases) {
    const std::string what = describe(c);
    ModelConfig cfg;
    cfg.head_dim = c.head_dim;
    cfg.rope_theta = c.scaling == RopeScaling::Type::kLlama3 ? 500000.0f : 1000000.0f;
    cfg.rope_scaling.type = c.scaling;
    cfg.rope_scaling.factor = c.scaling == RopeScaling::Type::kLlama3 ? 8.0f : 2.0f;
    const std::vector<float> inv_freq = cpu::rope_inv_freq(cfg);

    const int total_heads = c.heads + 2 * c.kv_heads;
    const int hd = c.head_dim;
    const int num_blocks = (c.tokens + 15) / 16 * 2 + 3;
    const auto qkv = random_half(static_cast<std::size_t>(c.tokens) * total_heads * hd, rng, 1.5f);
    const auto qn = random_half(hd, rng, 1.0f), kn = random_half(hd, rng, 1.0f);
    std::vector<int> positions(c.tokens), slots(c.tokens);
    std::vector<int> free_slots(num_blocks * 16);
    for (int i = 0; i < num_blocks * 16; ++i) free_slots[i] = i;
    std::shuffle(free_slots.begin(), free_slots.end(), rng);
    for (int t = 0; t < c.tokens; ++t) {
      positions[t] = static_cast<int>(rng() % 20000);
      slots[t] = t % 5 == 3 ? -1 : free_slots[t];  // some tokens are not cached
    }
    const std::size_t cache_elems = static_cast<std::size_t>(num_blocks) * c.kv_heads * 16 * hd;
    KernelBuffer<half_bits> dqkv(qkv), dq(static_cast<std::size_t>(c.tokens) * c.heads * hd),
        dk(cache_elems), dv(cache_elems), dqn(qn), dkn(kn);
    KernelBuffer<int> dpos(positions), dslots(slots);
    KernelBuffer<float> dfreq(inv_freq);
    cuda::QkvRopeCacheArgs a;
    a.qkv = as_half<const __half>(dqkv);
    a.q_out = as_half<__half>(dq);
    a.q_out_stride = c.heads * hd;
    a.k_cache = as_half<__half>(dk);
    a.v_cache = as_half<__half>(dv);
    a.positions = dpos.get();
    a.slot_mapping = dslots.get();
    a.inv_freq = dfreq.get();
    if (c.qk_norm) {
      a.q_norm_weight = as_half<const __half>(dqn);
      a.k_norm_weight = as_half<const __half>(dkn);
    }
    a.norm_eps = 1e-6f;
    a.num_tokens = c.tokens;
    a.num_heads = c.heads;
    a.num_kv_heads = c.kv_heads;
    a.head_dim = hd;
    cuda::qkv_rope_cache(a, nullptr);

    // Reference: split, norm, rotate (cpu_ops), write to the cache (cpu_ops layout).
    const std::vector<float> f = to_float(qkv);
    std::vector<float> q(static_cast<std::size_t>(c.tokens) * c.heads * hd),
        k(static_cast<std::size_t>(c.tokens) * c.kv_heads * hd), v(k.size());
    for (int t = 0; t < c.tokens; ++t) {
      const float* row = f.data() + static_cast<std::size_t>(t) * total_heads * hd;
      std::copy(row, row + c.heads * hd, q.begin() + static_cast<std::size_t>(t) * c.heads * hd);
      std::copy(row + c.heads * hd, row + (c.heads + c.kv_heads) * hd,
                k.begin() + static_cast<std::size_t>(t) * c.kv_heads * hd);
      std::copy(row + (c.heads + c.kv_heads) * hd, row + total_heads * hd,
                v.begin() + static_cast<std::size_t>(t) * c.kv_heads * hd);
    }
    if (c.qk_norm) {
      cpu::rms_norm(q.data(), to_float(qn).data(), q.data(), c.tokens * c.heads, hd, 1e-6f);
      cpu::rms_norm(k.data(), to_float(kn).data(), k.data(), c.tokens * c.kv_heads, hd, 1e-6f);
    }
    cpu::apply_rope(q.data(), positions.data(), c.tokens, c.heads, hd, inv_freq.data());
    cpu::apply_rope(k.data(), positions.data(), c.tokens, c.kv_heads, hd, inv_freq.data());
    EXPECT_TRUE(all_close(what + " q", to_float(dq.download()), q, kAtol, kRtol));

    // Cache: written slots hold k / v (v bit exact); every other slot is still poisoned.
    const auto gk = to_float(dk.download()), gv = to_float(dv.download());
    std::vector<float> got_k, ref_k, got_v, ref_v;
    std::vector<bool> written(static_cast<std::size_t>(num_blocks) * 16, false);
    for (int t = 0; t < c.tokens; ++t) {
      if (slots[t] < 0) continue;
      written[slots[t]] = true;
      for (int h = 0; h < c.kv_heads; ++h) {
        const std::size_t dst =
            ((static_cast<std::size_t>(slots[t] / 16) * c.kv_heads + h) * 16 + slots[t] % 16) * hd;
        const std::size_t src = (static_cast<std::size_t>(t) * c.kv_heads + h) * hd;
        got_k.insert(got_k.end(), gk.begin() + dst, gk.begin() + dst + hd);
        ref_k.insert(ref_k.end(), k.begin() + src, k.begin() + src + hd);
        got_v.insert(got_v.end(), gv.begin() + dst, gv.begin() + dst + hd);
        ref_v.insert(ref_v.end(), v.begin() + src, v.begin() + src + hd);
      }
    }
    EXPECT_TRUE(all_close(what + " k cache", got_k, ref_k, kAtol, kRtol));
    EXPECT_TRUE(all_close(what + " v cache", got_v, ref_v, 0, 0));
    std::size_t clobbered = 0;
    for (int s = 0; s < num_blocks * 16; ++s) {
      if (written[s]) continue;
      for (int h = 0; h < c.kv_heads; ++h) {
        const std::size_t at =
            ((static_cast<std::size_t>(s / 16) * c.kv_heads + h) * 16 + s % 16) * hd;
        for (int d = 0; d < hd; ++d) clobbered += !std::isnan(gk[at + d]) + !std::isnan(gv[at + d]);
      }
    }
    EXPECT_EQ(clobbered, 0u) << what << ": elements written outside the mapped slots";
  }
}

TEST(SiluMul, MatchesReferenceFusedAndSeparateInputs) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(3);
  std::vector<std::pair<int, int>> shapes = {{1, 8}, {3, 136}, {5, 4864}};
  if (!test::quick()) shapes.insert(shapes.end(), {{64, 14336}, {300, 18944}, {1, 2048}});
  for (const auto& [rows, cols] : shapes) {
    const std::string what =
        "silu_mul rows=" + std::to_string(rows) + " cols=" + std::to_string(cols);
    const auto gate_up = random_half(static_cast<std::size_t>(rows) * 2 * cols, rng, 3.0f);
    KernelBuffer<half_bits> din(gate_up), dout(static_cast<std::size_t>(rows) * cols);
    const __half* base = as_half<const __half>(din);
    cuda::silu_mul(as_half<__half>(dout), cols, base, base + cols, 2 * cols, rows, cols, nullptr);
    const auto f = to_float(gate_up);
    std::vector<float> g(static_cast<std::size_t>(rows) * cols), u(g.size()), ref(g.size());
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        g[static_cast<std::size_t>(r) * cols + c] = f[static_cast<std::size_t>(r) * 2 * cols + c];
        u[static_cast<std::size_t>(r) * cols + c] =
            f[static_cast<std::size_t>(r) * 2 * cols + cols + c];
      }
    }
    cpu::silu_mul(g.data(), u.data(), ref.data(), static_cast<std::int64_t>(g.size()));
    EXPECT_TRUE(all_close(what, to_float(dout.download()), ref, kAtol, kRtol));
  }
}

TEST(EmbeddingGather, CopiesRowsAndZeroesOtherShards) {
  AWQD_KERNEL_TEST_PRELUDE();
  std::mt19937_64 rng(4);
  for (const auto& [tokens, hidden, vocab] :
       std::vector<std::tuple<int, int, int>>{{1, 8, 5}, {17, 64, 100}, {40, 4096, 1000}}) {
    const std::string what =
        "embedding tokens=" + std::to_string(tokens) + " hidden=" + std::to_string(hidden);
    const auto table = random_half(static_cast<std::size_t>(vocab) * hidden, rng, 1.0f);
    // This shard holds rows [start, start + rows) of a 3x larger vocabulary.
    const int start = vocab, rows = vocab;
    std::vector<int> ids(tokens);
    for (auto& id : ids) id = static_cast<int>(rng() % (3 * vocab));
    KernelBuffer<half_bits> dtable(table), dout(static_cast<std::size_t>(tokens) * hidden);
    KernelBuffer<int> dids(ids);
    cuda::embedding_gather(as_half<__half>(dout), as_half<const __half>(dtable), dids.get(), tokens,
                           hidden, start, rows, nullptr);
    const auto got = dout.download();
    std::size_t wrong = 0;
    for (int t = 0; t < tokens; ++t) {
      const int row = ids[t] - start;
      for (int d = 0; d < hidden; ++d) {
        const half_bits want = row >= 0 && row < rows
                                   ? table[static_cast<std::size_t>(row) * hidden + d]
                                   : half_bits{0};
        wrong += got[static_cast<std::size_t>(t) * hidden + d] != want;
      }
    }
    EXPECT_EQ(wrong, 0u) << what;
  }
}

TEST(Launchers, RejectBadArguments) {
  AWQD_KERNEL_TEST_PRELUDE();
  KernelBuffer<half_bits> buf(64);
  EXPECT_THROW(cuda::rmsnorm(as_half<__half>(buf), as_half<__half>(buf), as_half<__half>(buf), 1,
                             12, 1e-5f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::silu_mul(as_half<__half>(buf), 8, as_half<__half>(buf) + 1,
                              as_half<__half>(buf), 8, 1, 8, nullptr),
               std::invalid_argument);
  cuda::QkvRopeCacheArgs a;
  a.head_dim = 96;
  EXPECT_THROW(cuda::qkv_rope_cache(a, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace awqd
