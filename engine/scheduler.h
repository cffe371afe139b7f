// The scheduler (no GPU in it): waiting and running queues, a token budget per step that mixes
// decodes with chunked prefills, priority order, automatic prefix caching through the block
// manager, and preemption by recompute when KV blocks run out. It turns a step into the flat
// StepBatch the executors consume. One thread owns it (the engine thread).
//
// A step, in order:
//   1. running sequences, highest priority first: each gets the tokens it still needs (1 for a
//      decode, the rest of its prompt for a chunked prefill) within the budget. When a sequence
//      needs a block and none is free, the lowest-priority, latest-arrived running sequence is
//      preempted (its blocks freed, its computed state dropped, back to the waiting queue to be
//      recomputed later: seeded sampling makes the recomputation produce the same tokens).
//   2. waiting sequences, highest priority first (then arrival): admitted while the budget, the
//      sequence limit and the free blocks (less a small watermark) allow. Admission first takes
//      whatever full blocks of the sequence's tokens are in the prefix cache.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/executor.h"
#include "engine/sampling.h"

namespace awqd {

struct Sequence {
  std::string id;
  std::uint64_t arrival = 0;  // admission order among equal priorities
  int priority = 0;           // higher first
  SamplingParams params;
  std::vector<std::int32_t> tokens;  // prompt, then generated tokens
  int num_prompt = 0;
  int num_computed = 0;       // tokens whose K/V are in the cache
  int num_cached_prompt = 0;  // prompt tokens taken from the prefix cache at first admission
  bool admitted_once = false;
  std::vector<std::int32_t> block_table;
  std::vector<std::uint64_t> block_hashes;  // chain hashes of the registered full blocks
  int preemptions = 0;

  int num_tokens() const { return static_cast<int>(tokens.size()); }
  int num_output() const { return num_tokens() - num_prompt; }
};

struct SchedulerConfig {
  int max_num_seqs = 256;
  int max_num_batched_tokens = 8192;
  bool enable_prefix_caching = true;
  float watermark = 0.01f;  // fraction of blocks kept free when admitting
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int num_new_tokens = 0;
  bool samples = false;  // reaches the end of its tokens: samples the next one
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;
  int num_tokens = 0;
  int num_preempted = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, int num_blocks);

  void add(std::unique_ptr<Sequence> seq);
  SchedulerOutput schedule();
  // After the executor ran the step: advances computed counts and registers full blocks.
  void commit(const SchedulerOutput& out);
  // Removes a sequence (finished or cancelled) and frees its blocks.
  std::unique_ptr<Sequence> remove(Sequence* seq);

  // Flat step metadata; sampling contexts point into the sequences.
  StepBatch make_batch(const SchedulerOutput& out) const;

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  const BlockManager& blocks() const { return blocks_; }
  std::int64_t total_preemptions() const { return preemptions_; }

 private:
  struct Order {  // priority descending, then arrival ascending
    bool operator()(const Sequence* a, const Sequence* b) const {
      return a->priority != b->priority ? a->priority > b->priority : a->arrival < b->arrival;
    }
  };
  void preempt(Sequence* seq);

  SchedulerConfig config_;
  BlockManager blocks_;
  std::set<Sequence*, Order> waiting_;
  std::set<Sequence*, Order> running_;
  std::unordered_map<Sequence*, std::unique_ptr<Sequence>> owned_;
  std::uint64_t next_arrival_ = 0;
  std::int64_t preemptions_ = 0;
};

}  // namespace awqd
