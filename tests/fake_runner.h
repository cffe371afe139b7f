// A Runner double for daemon tests and the daemon benchmark: no model, deterministic output.
// A job produces min(max_tokens, kMaxFakeTokens) tokens, one per step, token i being
// (seed + i) % 1000 with text "w<token> ". Markers in a text prompt steer it:
//   "#fail"   the engine fails the job (FinishReason::kError: transient, retried)
//   "#reject" the runner rejects the input (JobRejected, errc::kInvalidRequest)
//   "#slow"   each step of this job takes 20 ms more
// A text prompt counts as size / 4 + 1 tokens; one that does not fit the context is rejected
// (errc::kPromptTooLong), as the engine runner does.
// With tokens_per_job = 1 and no delay it is the no-op engine of tests/bench_daemon.cc.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "daemon/runner.h"

namespace awqd::test {

struct FakeRunnerOptions {
  int max_num_seqs = 8;
  int max_tokens_cap = 64;                  // tokens per job at most
  std::chrono::microseconds step_delay{0};  // per step
};

class FakeRunner final : public Runner {
 public:
  explicit FakeRunner(FakeRunnerOptions options) : options_(options) {}

  RunnerInfo info() const override {
    RunnerInfo info;
    info.model = "fake";
    info.model_hash = "0000000000000000";
    info.describe = "fake runner (tests), max_num_seqs " + std::to_string(options_.max_num_seqs);
    info.limits = {32000, 1024};
    info.max_num_seqs = options_.max_num_seqs;
    return info;
  }

  void add(const std::string& id, const Job& job, std::uint64_t seed) override {
    if (job.prompt.find("#reject") != std::string::npos) {
      throw JobRejected(errc::kInvalidRequest, "the fake runner rejects #reject");
    }
    Seq s;
    s.seed = seed;
    s.remaining = std::min(job.params.max_tokens, options_.max_tokens_cap);
    s.fail = job.prompt.find("#fail") != std::string::npos;
    s.slow = job.prompt.find("#slow") != std::string::npos;
    s.prompt_tokens = job.prompt_kind == PromptKind::kTokenIds
                          ? static_cast<int>(job.prompt_token_ids.size())
                          : static_cast<int>(job.prompt.size() / 4 + 1);
    if (s.prompt_tokens >=
        info().limits.max_context) {  // as the engine runner does after tokenizing
      throw JobRejected(errc::kPromptTooLong,
                        "the fake prompt is " + std::to_string(s.prompt_tokens) + " tokens");
    }
    seqs_[id] = s;
  }

  void cancel(const std::string& id) override {
    if (auto it = seqs_.find(id); it != seqs_.end()) it->second.cancelled = true;
  }

  std::vector<RequestOutput> step() override {
    bool slow = false;
    for (const auto& [id, s] : seqs_) slow |= s.slow;
    if (options_.step_delay.count() > 0) std::this_thread::sleep_for(options_.step_delay);
    if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<RequestOutput> outs;
    for (auto it = seqs_.begin(); it != seqs_.end();) {
      Seq& s = it->second;
      RequestOutput out;
      out.id = it->first;
      out.prompt_tokens = s.prompt_tokens;
      if (s.cancelled) {
        out.finished = true;
        out.finish_reason = FinishReason::kCancelled;
      } else if (s.fail) {
        out.finished = true;
        out.finish_reason = FinishReason::kError;
        out.error = "fake engine failure (#fail)";
      } else {
        const auto token = static_cast<std::int32_t>((s.seed + s.produced) % 1000);
        out.new_token_ids = {token};
        out.new_text = "w" + std::to_string(token) + " ";
        ++s.produced;
        stats_.generated_tokens += 1;
        if (s.produced == 1) stats_.prompt_tokens += s.prompt_tokens;
        if (--s.remaining <= 0) {
          out.finished = true;
          out.finish_reason = FinishReason::kLength;
        }
      }
      out.completion_tokens = s.produced;
      outs.push_back(std::move(out));
      it = outs.back().finished ? seqs_.erase(it) : std::next(it);
    }
    ++stats_.steps;
    stats_.last_step_batch = static_cast<int>(outs.size());
    stats_.running = static_cast<int>(seqs_.size());
    stats_.kv_blocks_total = 1024;
    stats_.kv_blocks_used = static_cast<int>(seqs_.size());
    return outs;
  }

  bool has_unfinished() const override { return !seqs_.empty(); }
  EngineStats stats() const override { return stats_; }

 private:
  struct Seq {
    std::uint64_t seed = 0;
    int remaining = 0, produced = 0, prompt_tokens = 0;
    bool fail = false, slow = false, cancelled = false;
  };
  FakeRunnerOptions options_;
  std::map<std::string, Seq> seqs_;
  EngineStats stats_;
};

}  // namespace awqd::test
