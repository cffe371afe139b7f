// Tensor-parallel sharding on the CPU (engine/tensor_parallel.h): the plans for real models'
// shapes, refusals with their reasons, invariants over many shapes, and a decoder layer run shard
// by shard in fp32 (each rank's attention and MLP over its own heads, KV cache and intermediate
// columns, partial outputs summed in rank order) against the whole layer.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/cpu_layer.h"
#include "engine/tensor_parallel.h"
#include "tests/model_builder.h"

namespace awqd {
namespace {

ModelConfig shape(int heads, int kv_heads, int head_dim, int inter, int vocab, int group_size) {
  ModelConfig c;
  c.hidden_size = 4096;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  c.num_layers = 1;
  c.quant.awq = group_size > 0;
  c.quant.group_size = group_size > 0 ? group_size : 128;
  return c;
}

std::vector<int> sizes(const TensorParallelPlan& p, Span RankShard::*f) {
  std::vector<int> out;
  for (const auto& r : p.ranks) out.push_back((r.*f).size());
  return out;
}

using V = std::vector<int>;

TEST(TensorParallelPlan, Llama3_8B) {
  const ModelConfig c = shape(32, 8, 128, 14336, 128256, 128);
  const auto p2 = plan_tensor_parallel(c, 2);
  EXPECT_EQ(sizes(p2, &RankShard::q_heads), (V{16, 16}));
  EXPECT_EQ(sizes(p2, &RankShard::kv_heads), (V{4, 4}));
  const auto p3 = plan_tensor_parallel(c, 3);
  EXPECT_EQ(sizes(p3, &RankShard::q_heads), (V{12, 12, 8}));  // GQA groups of 4 stay whole
  EXPECT_EQ(sizes(p3, &RankShard::kv_heads), (V{3, 3, 2}));
  EXPECT_EQ(sizes(p3, &RankShard::inter), (V{38 * 128, 37 * 128, 37 * 128}));
  EXPECT_EQ(sizes(p3, &RankShard::vocab), (V{42752, 42752, 42752}));
  EXPECT_FALSE(p3.kv_replicated);
  const auto p4 = plan_tensor_parallel(c, 4);
  EXPECT_EQ(sizes(p4, &RankShard::q_heads), (V{8, 8, 8, 8}));
  EXPECT_EQ(p3.describe(),
            "tp 3: q heads 12/12/8, kv heads 3/3/2, intermediate 4864/4736/4736, vocab "
            "42752/42752/42752");
}

TEST(TensorParallelPlan, Qwen25_14B) {
  const ModelConfig c = shape(40, 8, 128, 13824, 152064, 128);
  const auto p = plan_tensor_parallel(c, 3);
  EXPECT_EQ(sizes(p, &RankShard::q_heads), (V{15, 15, 10}));
  EXPECT_EQ(sizes(p, &RankShard::kv_heads), (V{3, 3, 2}));
  EXPECT_EQ(sizes(p, &RankShard::inter), (V{4608, 4608, 4608}));
}

TEST(TensorParallelPlan, MhaThirtyTwoHeadsOverThree) {
  const auto p = plan_tensor_parallel(shape(32, 32, 128, 11008, 32000, 128), 3);
  EXPECT_EQ(sizes(p, &RankShard::q_heads), (V{11, 11, 10}));
  EXPECT_EQ(sizes(p, &RankShard::kv_heads), (V{11, 11, 10}));
  EXPECT_EQ(p.ranks[1].q_heads, (Span{11, 22}));
  EXPECT_EQ(sizes(p, &RankShard::vocab), (V{10672, 10664, 10664}));
}

TEST(TensorParallelPlan, ReplicatesKvHeadsWhenTpExceedsThem) {
  // Qwen2.5-7B: 28 query heads over 4 KV heads.
  const auto p8 = plan_tensor_parallel(shape(28, 4, 128, 18944, 152064, 128), 8);
  EXPECT_TRUE(p8.kv_replicated);
  EXPECT_EQ(sizes(p8, &RankShard::q_heads), (V{4, 3, 4, 3, 4, 3, 4, 3}));
  EXPECT_EQ(sizes(p8, &RankShard::kv_heads), (V{1, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(p8.ranks[1].kv_heads, (Span{0, 1}));
  EXPECT_EQ(p8.ranks[1].q_heads, (Span{4, 7}));
  EXPECT_EQ(p8.ranks[2].kv_heads, (Span{1, 2}));
  // llama-13m (fp16, 4 heads, 2 KV heads, head_dim 64) over 3: KV head 0 on two ranks.
  const auto p3 = plan_tensor_parallel(shape(4, 2, 64, 768, 32000, 0), 3);
  EXPECT_EQ(sizes(p3, &RankShard::q_heads), (V{1, 1, 2}));
  EXPECT_EQ(p3.ranks[0].kv_heads, (Span{0, 1}));
  EXPECT_EQ(p3.ranks[1].kv_heads, (Span{0, 1}));
  EXPECT_EQ(p3.ranks[2].kv_heads, (Span{1, 2}));
}

TEST(TensorParallelPlan, RefusesSplitsOffGroupBoundariesAndSaysWhich) {
  // head_dim 64 with G = 128: o_proj shards need an even number of heads; 4 MHA heads give two
  // such pairs, so only 1 and 2 ranks work.
  try {
    plan_tensor_parallel(shape(4, 4, 64, 1024, 1000, 128), 3);
    FAIL() << "expected a refusal";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tensor_parallel = 3 cannot split this model"), std::string::npos) << m;
    EXPECT_NE(m.find("multiples of the AWQ group size 128"), std::string::npos) << m;
    EXPECT_NE(m.find("Degrees that can: 1, 2."), std::string::npos) << m;
  }
  // intermediate_size of 2 groups cannot go to 3 ranks.
  EXPECT_THROW(plan_tensor_parallel(shape(8, 8, 128, 256, 1000, 128), 3), std::runtime_error);
  EXPECT_THROW(plan_tensor_parallel(shape(8, 8, 128, 1024, 1000, 128), 0), std::runtime_error);
}

TEST(TensorParallelPlan, InvariantsOverManyShapes) {
  int plans = 0;
  for (int heads : {1, 2, 4, 6, 8, 12, 14, 28, 32, 40, 64})
    for (int kv : {1, 2, 4, 8, 32})
      for (int hd : {64, 128})
        for (int G : {0, 32, 64, 128})
          for (int tp = 1; tp <= 8; ++tp) {
            if (kv > heads || heads % kv) continue;
            const ModelConfig c = shape(heads, kv, hd, 3 * 1024, 32003, G);
            TensorParallelPlan p;
            try {
              p = plan_tensor_parallel(c, tp);
            } catch (const std::runtime_error&) {
              continue;
            }
            ++plans;
            SCOPED_TRACE(p.describe() + " head_dim " + std::to_string(hd) + " G " +
                         std::to_string(G));
            ASSERT_EQ(static_cast<int>(p.ranks.size()), tp);
            const int align = G ? G : 8, g = heads / kv;
            std::vector<int> q_owner(heads, 0);
            int inter = 0, vocab = 0;
            for (const RankShard& r : p.ranks) {
              ASSERT_GT(r.q_heads.size(), 0);
              ASSERT_GT(r.kv_heads.size(), 0);
              for (int h = r.q_heads.begin; h < r.q_heads.end; ++h) ++q_owner[h];
              // The local heads form whole groups of the local KV heads (or part of one group):
              // local head j reads local KV head (begin + j) / g - kv.begin, a uniform ratio.
              const ModelConfig rc = rank_config(c, r);
              ASSERT_EQ(rc.num_heads % rc.num_kv_heads, 0);
              const int ratio = rc.num_heads / rc.num_kv_heads;
              for (int j = 0; j < r.q_heads.size(); ++j)
                ASSERT_EQ((r.q_heads.begin + j) / g - r.kv_heads.begin, j / ratio);
              ASSERT_EQ(r.q_heads.begin * hd % align, 0);
              ASSERT_EQ(r.inter.begin, inter);
              ASSERT_EQ(r.inter.begin % align, 0);
              ASSERT_EQ(r.vocab.begin, vocab);
              ASSERT_EQ(r.vocab.begin % 8, 0);
              inter = r.inter.end;
              vocab = r.vocab.end;
            }
            ASSERT_EQ(q_owner, std::vector<int>(heads, 1));
            ASSERT_EQ(inter, c.intermediate_size);
            ASSERT_EQ(vocab, c.vocab_size);
          }
  EXPECT_GT(plans, 500);
}

// ---- A decoder layer, sharded, on the CPU ---------------------------------------------------

struct Shape {
  const char* arch;
  int hidden, inter, heads, kv_heads, head_dim;
  bool awq;
  int group_size;
};

class ShardedLayer : public ::testing::TestWithParam<Shape> {};

TEST_P(ShardedLayer, EqualsTheWholeLayer) {
  const Shape sh = GetParam();
  test::TempDir dir;
  test::TinyModelSpec spec;
  spec.arch = sh.arch;
  spec.hidden = sh.hidden;
  spec.intermediate = sh.inter;
  spec.layers = 1;
  spec.heads = sh.heads;
  spec.kv_heads = sh.kv_heads;
  spec.head_dim = sh.head_dim;
  spec.vocab = 64;
  spec.awq = sh.awq;
  spec.group_size = sh.group_size;
  test::write_tiny_model(dir.path(), spec);
  const auto weights = ModelWeights::load(dir.path());
  const ModelConfig& c = weights->config();
  const std::vector<float> inv_freq = cpu::rope_inv_freq(c);

  // One sequence of T tokens, prefilled at once.
  const int T = 21, D = c.hidden_size, blocks = (T + 15) / 16;
  std::vector<std::int32_t> positions(T), slots(T), cu{0, T}, tables(blocks);
  for (int t = 0; t < T; ++t) positions[t] = slots[t] = t;
  for (int b = 0; b < blocks; ++b) tables[b] = b;
  cpu::AttentionMeta meta{positions.data(), cu.data(), slots.data(), tables.data(), blocks, 1};
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> h(static_cast<std::size_t>(T) * D);
  for (float& x : h) x = nd(rng);

  auto run = [&](const ModelConfig& rc, const LayerWeights& lw, std::vector<float>& attn,
                 std::vector<float>& mlp) {
    const cpu::DecoderLayer layer = cpu::widen_layer(lw, rc);
    const std::size_t cache_elems =
        static_cast<std::size_t>(blocks) * rc.num_kv_heads * 16 * rc.head_dim;
    std::vector<float> k(cache_elems), v(cache_elems);
    const cpu::PagedKv cache{k.data(), v.data(), rc.num_kv_heads, rc.head_dim, 16};
    attn.assign(h.size(), 0.0f);
    mlp.assign(h.size(), 0.0f);
    cpu::attention_block(rc, layer, inv_freq.data(), h.data(), T, cache, meta, attn.data());
    cpu::mlp_block(rc, layer, h.data(), T, mlp.data());
  };
  std::vector<float> ref_attn, ref_mlp;
  run(c, weights->layers()[0], ref_attn, ref_mlp);

  int tried = 0;
  for (int tp = 2; tp <= 4; ++tp) {
    TensorParallelPlan plan;
    try {
      plan = plan_tensor_parallel(c, tp);
    } catch (const std::runtime_error& e) {
      std::printf("tp %d: %s\n", tp, e.what());
      continue;
    }
    ++tried;
    SCOPED_TRACE(plan.describe());
    std::vector<float> sum_attn(h.size(), 0.0f), sum_mlp(h.size(), 0.0f);
    for (int r = 0; r < tp; ++r) {
      const LayerShard shard = shard_layer(weights->layers()[0], c, plan.ranks[r], r == 0);
      std::vector<float> attn, mlp;
      run(rank_config(c, plan.ranks[r]), shard.weights, attn, mlp);
      for (std::size_t i = 0; i < h.size(); ++i) {
        sum_attn[i] += attn[i];
        sum_mlp[i] += mlp[i];
      }
    }
    // fp32 sums in another order: agreement to rounding.
    double scale = 0;
    for (float x : ref_attn) scale = std::max(scale, std::fabs(static_cast<double>(x)));
    for (std::size_t i = 0; i < h.size(); ++i) {
      ASSERT_NEAR(sum_attn[i], ref_attn[i], 1e-5 * scale + 1e-6) << "attention output " << i;
      ASSERT_NEAR(sum_mlp[i], ref_mlp[i], 1e-4 * std::fabs(ref_mlp[i]) + 1e-5)
          << "mlp output " << i;
    }
  }
  EXPECT_GT(tried, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ShardedLayer,
    ::testing::Values(
        // GQA 3:1, AWQ g32: KV heads split whole at tp 2, replicated at tp 3 and 4.
        Shape{"Qwen2ForCausalLM", 64, 160, 6, 2, 32, true, 32},
        // 8 KV heads over 3: 3/3/2; uneven intermediate groups.
        Shape{"LlamaForCausalLM", 96, 352, 16, 8, 16, true, 32},
        // MHA, uneven 2/1/1 heads at tp 4; Qwen3 q/k norms.
        Shape{"Qwen3ForCausalLM", 64, 96, 5, 5, 16, false, 32},
        // head_dim 128, g128 AWQ.
        Shape{"LlamaForCausalLM", 128, 384, 4, 2, 128, true, 128}),
    [](const ::testing::TestParamInfo<Shape>& i) { return std::to_string(i.index); });

TEST(LinearShards, ColumnAndRowShardsDequantizeToTheirSlices) {
  test::TempDir dir;
  test::TinyModelSpec spec;
  spec.hidden = 64;
  spec.intermediate = 128;
  spec.layers = 1;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.head_dim = 16;
  spec.awq = true;
  spec.group_size = 32;
  test::write_tiny_model(dir.path(), spec);
  const auto weights = ModelWeights::load(dir.path());
  const LinearWeight& w = weights->layers()[0].gate;  // K 64, N 128
  const std::vector<float> full = w.dense_nk();       // (N, K)
  const LinearShard col = column_shard(w, {40, 96});
  const std::vector<float> c = col.weight.dense_nk();
  ASSERT_EQ(c.size(), 56u * 64u);
  for (int n = 0; n < 56; ++n)
    for (int k = 0; k < 64; ++k) ASSERT_EQ(c[n * 64 + k], full[(n + 40) * 64 + k]);
  const LinearWeight& d = weights->layers()[0].down;  // K 128, N 64
  const std::vector<float> dfull = d.dense_nk();
  const LinearShard row = row_shard(d, {32, 96}, false);
  const std::vector<float> r = row.weight.dense_nk();
  ASSERT_EQ(r.size(), 64u * 64u);
  for (int n = 0; n < 64; ++n)
    for (int k = 0; k < 64; ++k) ASSERT_EQ(r[n * 64 + k], dfull[n * 128 + k + 32]);
  EXPECT_THROW(row_shard(d, {16, 96}, false), std::logic_error);  // off a group boundary
  EXPECT_THROW(column_shard(w, {4, 96}), std::logic_error);       // off a packed word
}

}  // namespace
}  // namespace awqd
