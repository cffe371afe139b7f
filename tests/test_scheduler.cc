// Block manager and scheduler, CPU only: reference counts, prefix-cache hits and LRU eviction,
// token budgets, chunked prefill, priority order, preemption when blocks run out.
#include <gtest/gtest.h>

#include "engine/block_manager.h"
#include "engine/scheduler.h"

namespace awqd {
namespace {

std::vector<std::int32_t> tokens(int n, int base = 100) {
  std::vector<std::int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = base + i;
  return t;
}

TEST(BlockManager, GrowAndReleaseCountBlocks) {
  BlockManager bm(8, 16, true);
  std::vector<std::int32_t> table;
  EXPECT_TRUE(bm.grow(table, 33));  // 3 blocks
  EXPECT_EQ(table.size(), 3u);
  EXPECT_EQ(bm.num_free(), 5);
  EXPECT_FALSE(bm.grow(table, 16 * 9));  // needs 9 > 8: nothing taken
  EXPECT_EQ(bm.num_free(), 5);
  bm.release(table);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(bm.num_free(), 8);
}

TEST(BlockManager, PrefixHitsOnlyComputedFullBlocksAndSharesThem) {
  BlockManager bm(16, 16, true);
  const auto t = tokens(40);
  std::vector<std::int32_t> a;
  std::vector<std::uint64_t> ha;
  ASSERT_TRUE(bm.grow(a, 40));
  std::vector<std::int32_t> b;
  std::vector<std::uint64_t> hb;
  EXPECT_EQ(bm.acquire_prefix(t, 39, b, hb), 0);  // nothing registered yet
  bm.register_full_blocks(t, 40, a, ha);          // two full blocks computed
  EXPECT_EQ(ha.size(), 2u);
  EXPECT_EQ(bm.acquire_prefix(t, 39, b, hb), 32);
  EXPECT_EQ(b, std::vector<std::int32_t>(a.begin(), a.begin() + 2));
  EXPECT_EQ(hb, ha);
  // A different second block shares only the first.
  auto t2 = t;
  t2[20] = 7;
  std::vector<std::int32_t> c;
  std::vector<std::uint64_t> hc;
  EXPECT_EQ(bm.acquire_prefix(t2, 39, c, hc), 16);
  // The limit excludes a block that would cover the last token.
  std::vector<std::int32_t> d;
  std::vector<std::uint64_t> hd;
  EXPECT_EQ(bm.acquire_prefix(t, 32, d, hd), 32);
  std::vector<std::int32_t> e;
  std::vector<std::uint64_t> he;
  EXPECT_EQ(bm.acquire_prefix(t, 31, e, he), 16);
}

TEST(BlockManager, FreedCachedBlocksSurviveUntilEvictedLeastRecentFirst) {
  BlockManager bm(4, 4, true);
  const auto t = tokens(8);
  std::vector<std::int32_t> a;
  std::vector<std::uint64_t> ha;
  ASSERT_TRUE(bm.grow(a, 8));
  bm.register_full_blocks(t, 8, a, ha);
  bm.release(a);
  EXPECT_EQ(bm.num_free(), 4);
  std::vector<std::int32_t> b;
  std::vector<std::uint64_t> hb;
  EXPECT_EQ(bm.acquire_prefix(t, 8, b, hb), 8);  // still cached after release
  bm.release(b);
  // Taking all four blocks for other data evicts the cached ones.
  std::vector<std::int32_t> other;
  ASSERT_TRUE(bm.grow(other, 16));
  bm.release(other);
  std::vector<std::int32_t> c;
  std::vector<std::uint64_t> hc;
  EXPECT_EQ(bm.acquire_prefix(t, 8, c, hc), 0);
}

TEST(BlockManager, HashCollisionIsAMissNotAWrongHit) {
  // Same hash chain input gives the same hash; different tokens are compared before a hit.
  const auto t = tokens(4);
  EXPECT_EQ(BlockManager::chain_hash(0, t), BlockManager::chain_hash(0, t));
  EXPECT_NE(BlockManager::chain_hash(0, t), BlockManager::chain_hash(1, t));
  auto u = t;
  u[3] = 9;
  EXPECT_NE(BlockManager::chain_hash(0, t), BlockManager::chain_hash(0, u));
}

std::unique_ptr<Sequence> seq(const std::string& id, int prompt, int priority = 0, int base = 100) {
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->tokens = tokens(prompt, base);
  s->num_prompt = prompt;
  s->priority = priority;
  return s;
}

TEST(Scheduler, ChunkedPrefillWithinTokenBudget) {
  SchedulerConfig c;
  c.max_num_batched_tokens = 32;
  Scheduler s(c, 64);
  Sequence* a = nullptr;
  {
    auto p = seq("a", 70);
    a = p.get();
    s.add(std::move(p));
  }
  auto out = s.schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].num_new_tokens, 32);
  EXPECT_FALSE(out.seqs[0].samples);
  s.commit(out);
  out = s.schedule();
  EXPECT_EQ(out.seqs[0].num_new_tokens, 32);
  s.commit(out);
  out = s.schedule();
  EXPECT_EQ(out.seqs[0].num_new_tokens, 6);
  EXPECT_TRUE(out.seqs[0].samples);
  const StepBatch b = s.make_batch(out);
  EXPECT_EQ(b.positions.front(), 64);
  EXPECT_EQ(b.context_lens[0], 70);
  EXPECT_EQ(b.sample_contexts[0].position, 70u);
  EXPECT_EQ(a->num_computed, 64);
}

TEST(Scheduler, DecodesFirstThenPriorityOrderedAdmission) {
  SchedulerConfig c;
  c.max_num_batched_tokens = 20;
  Scheduler s(c, 64);
  s.add(seq("low", 10, 0));
  s.add(seq("high", 10, 9));
  auto out = s.schedule();
  ASSERT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(out.seqs[0].seq->id, "high");
  EXPECT_EQ(out.seqs[1].seq->id, "low");
  s.commit(out);
  for (auto& x : out.seqs) x.seq->tokens.push_back(5);  // both sampled a token
  s.add(seq("late", 30, 5));
  out = s.schedule();
  // Two decodes (1 token each) come first; the newcomer gets the remaining 18 tokens.
  ASSERT_EQ(out.seqs.size(), 3u);
  EXPECT_EQ(out.seqs[0].num_new_tokens, 1);
  EXPECT_EQ(out.seqs[1].num_new_tokens, 1);
  EXPECT_EQ(out.seqs[2].seq->id, "late");
  EXPECT_EQ(out.seqs[2].num_new_tokens, 18);
}

TEST(Scheduler, RespectsMaxNumSeqs) {
  SchedulerConfig c;
  c.max_num_seqs = 2;
  Scheduler s(c, 64);
  for (int i = 0; i < 5; ++i) s.add(seq("s" + std::to_string(i), 4));
  EXPECT_EQ(s.schedule().seqs.size(), 2u);
  EXPECT_EQ(s.num_waiting(), 3);
}

TEST(Scheduler, PreemptsLowestPriorityWhenBlocksRunOut) {
  SchedulerConfig c;
  c.watermark = 0;
  c.enable_prefix_caching = false;
  Scheduler s(c, 4);  // 4 blocks of 16 tokens
  s.add(seq("hi", 16, 5));
  s.add(seq("lo", 32, 0, 500));
  auto out = s.schedule();
  ASSERT_EQ(out.seqs.size(), 2u);  // 1 + 2 blocks
  s.commit(out);
  for (auto& x : out.seqs) x.seq->tokens.push_back(1);
  // "hi" needs a second block (token 17), "lo" needs a third: only one is free.
  out = s.schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].seq->id, "hi");
  EXPECT_EQ(out.num_preempted, 1);
  EXPECT_EQ(s.num_waiting(), 1);
  EXPECT_EQ(s.total_preemptions(), 1);
  s.commit(out);
  out.seqs[0].seq->tokens.push_back(1);
  Sequence* hi = out.seqs[0].seq;
  s.remove(hi);  // "hi" finishes: "lo" comes back and recomputes prompt + its sampled token
  out = s.schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].seq->id, "lo");
  EXPECT_EQ(out.seqs[0].num_new_tokens, 33);
  EXPECT_TRUE(out.seqs[0].samples);
}

TEST(Scheduler, BatchMetadataMapsSlotsThroughBlockTables) {
  Scheduler s(SchedulerConfig{}, 32);
  s.add(seq("a", 20));
  s.add(seq("b", 3));
  const auto out = s.schedule();
  const StepBatch b = s.make_batch(out);
  ASSERT_EQ(b.num_seqs(), 2);
  EXPECT_EQ(b.cu_seqlens_q, (std::vector<std::int32_t>{0, 20, 23}));
  EXPECT_EQ(b.max_blocks_per_seq, 2);
  for (int t = 0; t < 20; ++t) {
    const int block = b.block_tables[t / kKvBlockSize];
    EXPECT_EQ(b.slot_mapping[t], block * kKvBlockSize + t % kKvBlockSize);
  }
  EXPECT_EQ(b.block_tables[3], -1);  // b has one block; padding is -1
  EXPECT_EQ(b.sample_seqs, (std::vector<int>{0, 1}));
}

}  // namespace
}  // namespace awqd
