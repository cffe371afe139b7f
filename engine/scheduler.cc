#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>

namespace awqd {

Scheduler::Scheduler(const SchedulerConfig& config, int num_blocks)
    : config_(config), blocks_(num_blocks, kKvBlockSize, config.enable_prefix_caching) {}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
  if (seq->tokens.empty()) throw std::invalid_argument("sequence " + seq->id + " has no tokens");
  seq->arrival = next_arrival_++;
  waiting_.insert(seq.get());
  Sequence* key = seq.get();
  owned_.emplace(key, std::move(seq));
}

void Scheduler::preempt(Sequence* seq) {
  running_.erase(seq);
  blocks_.release(seq->block_table);
  seq->block_hashes.clear();
  seq->num_computed = 0;
  ++seq->preemptions;
  ++preemptions_;
  waiting_.insert(seq);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int budget = config_.max_num_batched_tokens;

  // 1. Running sequences, in priority order. Victims for preemption come from the back.
  std::vector<Sequence*> order(running_.begin(), running_.end());
  std::vector<Sequence*> scheduled;
  for (std::size_t i = 0; i < order.size() && budget > 0; ++i) {
    Sequence* seq = order[i];
    if (!running_.count(seq)) continue;  // preempted as a victim below
    const int n = std::min(seq->num_tokens() - seq->num_computed, budget);
    if (n <= 0) continue;
    bool fits = blocks_.grow(seq->block_table, seq->num_computed + n);
    while (!fits) {
      // Preempt the lowest-priority latest running sequence that is not yet scheduled.
      Sequence* victim = nullptr;
      for (auto it = order.rbegin(); it != order.rend(); ++it)
        if (*it != seq && running_.count(*it) &&
            std::find(scheduled.begin(), scheduled.end(), *it) == scheduled.end()) {
          victim = *it;
          break;
        }
      if (!victim) break;
      preempt(victim);
      ++out.num_preempted;
      fits = blocks_.grow(seq->block_table, seq->num_computed + n);
    }
    if (!fits) {
      preempt(seq);
      ++out.num_preempted;
      continue;
    }
    scheduled.push_back(seq);
    out.seqs.push_back({seq, n, seq->num_computed + n == seq->num_tokens()});
    out.num_tokens += n;
    budget -= n;
  }

  // 2. Admit waiting sequences while there is room (never by preempting running ones).
  const int watermark = static_cast<int>(config_.watermark * static_cast<float>(blocks_.num_blocks()));
  while (budget > 0 && !waiting_.empty() && static_cast<int>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = *waiting_.begin();
    if (out.num_preempted > 0) break;  // memory is short this step: let running ones finish
    std::vector<std::int32_t> table;
    std::vector<std::uint64_t> hashes;
    const int cached = blocks_.acquire_prefix(seq->tokens, seq->num_tokens() - 1, table, hashes);
    const int n = std::min(seq->num_tokens() - cached, budget);
    const int need = blocks_.blocks_for(cached + n) - static_cast<int>(table.size());
    if (need > blocks_.num_free() - (running_.empty() ? 0 : watermark)) {
      blocks_.release(table);
      break;
    }
    blocks_.grow(table, cached + n);
    waiting_.erase(waiting_.begin());
    seq->block_table = std::move(table);
    seq->block_hashes = std::move(hashes);
    seq->num_computed = cached;
    if (!seq->admitted_once) seq->num_cached_prompt = std::min(cached, seq->num_prompt);
    seq->admitted_once = true;
    running_.insert(seq);
    out.seqs.push_back({seq, n, cached + n == seq->num_tokens()});
    out.num_tokens += n;
    budget -= n;
  }
  return out;
}

void Scheduler::commit(const SchedulerOutput& out) {
  for (const auto& s : out.seqs) {
    Sequence* seq = s.seq;
    seq->num_computed += s.num_new_tokens;
    blocks_.register_full_blocks(seq->tokens, seq->num_computed, seq->block_table, seq->block_hashes);
  }
}

std::unique_ptr<Sequence> Scheduler::remove(Sequence* seq) {
  waiting_.erase(seq);
  running_.erase(seq);
  blocks_.release(seq->block_table);
  const auto it = owned_.find(seq);
  std::unique_ptr<Sequence> out = std::move(it->second);
  owned_.erase(it);
  return out;
}

StepBatch Scheduler::make_batch(const SchedulerOutput& out) const {
  StepBatch b;
  b.cu_seqlens_q.push_back(0);
  int max_blocks = 0;
  for (const auto& s : out.seqs) max_blocks = std::max(max_blocks, static_cast<int>(s.seq->block_table.size()));
  b.max_blocks_per_seq = max_blocks;
  b.block_tables.assign(out.seqs.size() * static_cast<std::size_t>(max_blocks), -1);
  for (std::size_t i = 0; i < out.seqs.size(); ++i) {
    const Sequence& seq = *out.seqs[i].seq;
    const int start = seq.num_computed, end = start + out.seqs[i].num_new_tokens;
    for (int p = start; p < end; ++p) {
      b.token_ids.push_back(seq.tokens[p]);
      b.positions.push_back(p);
      b.slot_mapping.push_back(seq.block_table[p / kKvBlockSize] * kKvBlockSize + p % kKvBlockSize);
    }
    b.cu_seqlens_q.push_back(static_cast<std::int32_t>(b.token_ids.size()));
    b.context_lens.push_back(end);
    std::copy(seq.block_table.begin(), seq.block_table.end(), b.block_tables.begin() + static_cast<std::ptrdiff_t>(i * max_blocks));
    if (out.seqs[i].samples) {
      b.sample_seqs.push_back(static_cast<int>(i));
      SamplingContext ctx;
      ctx.params = &seq.params;
      ctx.position = static_cast<std::uint32_t>(seq.num_tokens());
      ctx.prompt = std::span<const std::int32_t>(seq.tokens.data(), seq.num_prompt);
      ctx.output = std::span<const std::int32_t>(seq.tokens.data() + seq.num_prompt, seq.num_output());
      b.sample_contexts.push_back(ctx);
    }
  }
  return b;
}

}  // namespace awqd
