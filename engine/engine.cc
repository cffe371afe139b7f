// Engine: the request lifecycle around the scheduler and an executor. Per request it keeps the
// streaming detokenizer and the stop-string state; per step it schedules, builds the flat batch,
// runs the executor, appends sampled tokens, and decides which requests finished and why.
//
// The step pipeline (async_output): step() waits for step n, appends its tokens and applies the
// checks that need only token ids (stop ids, EOS, max_tokens, the context), schedules and
// submits step n + 1, and only then detokenizes step n's tokens, matches stop strings and builds
// the outputs, while the device runs step n + 1. A sequence a stop string finishes may already
// be in step n + 1: its request is answered at once, the token step n + 1 samples for it is
// dropped, and it leaves the scheduler when step n + 1 completes. Cancellations take effect
// when the step in flight completes, dropping its tokens for the cancelled requests, so every
// request returns the same tokens with async_output on or off.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include "engine/cpu_executor.h"
#include "engine/executor_factory.h"
#include "engine/model_weights.h"
#include "engine/scheduler.h"
#include "engine/version.h"

namespace awqd {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "";
}

namespace {

// Length of the longest prefix of `s` that ends on a UTF-8 character boundary.
std::size_t utf8_safe_prefix(const std::string& s, std::size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

using Clock = std::chrono::steady_clock;

// Adds the time since the previous lap to a StepTimes field; reads no clock when off.
class Laps {
 public:
  explicit Laps(bool on) : on_(on) {
    if (on_) last_ = Clock::now();
  }
  void lap(double& into) {
    if (!on_) return;
    const auto now = Clock::now();
    into += std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
  }

 private:
  bool on_;
  Clock::time_point last_;
};

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

void StepTimes::add(const StepTimes& o) {
  steps += o.steps;
  sequences += o.sequences;
  tokens += o.tokens;
  period_ms += o.period_ms;
  caller_ms += o.caller_ms;
  wait_ms += o.wait_ms;
  update_ms += o.update_ms;
  schedule_ms += o.schedule_ms;
  make_batch_ms += o.make_batch_ms;
  submit_ms += o.submit_ms;
  outputs_ms += o.outputs_ms;
  gpu_steps += o.gpu_steps;
  graph_steps += o.graph_steps;
  gpu_step_ms += o.gpu_step_ms;
  for (int c = 0; c < kGpuCategories; ++c) gpu_ms[c] += o.gpu_ms[c];
}

struct Engine::Impl {
  EngineConfig config;
  std::unique_ptr<ModelWeights> weights;
  Tokenizer tokenizer;
  std::unique_ptr<Executor> executor;
  std::unique_ptr<Scheduler> scheduler;
  int max_model_len = 0;
  std::size_t max_stop_len = 0;

  struct Request {
    Request(Sequence* s, const Tokenizer& tok) : seq(s), decoder(tok, /*skip_special_tokens=*/true) {}
    Sequence* seq;
    IncrementalDecoder decoder;
    std::string text;      // output text so far (stop strings cut)
    std::size_t emitted = 0;  // bytes of `text` already returned
    bool cancel = false;
    std::size_t max_stop = 0;
  };
  std::unordered_map<std::string, Request> requests;
  std::vector<std::string> cancelled;  // ids to finish at the next step
  EngineStats stats;

  // The step submitted to the executor and not yet completed (at most one).
  struct InFlight {
    SchedulerOutput sched;
    bool profile = false;  // a sampled step (EngineConfig::profile)
  };
  std::optional<InFlight> in_flight;
  // Sequences a stop string finished while they were in the step in flight: their requests are
  // answered and gone; the token that step samples for them is dropped, and they leave the
  // scheduler (freeing their blocks) when it completes.
  std::vector<Sequence*> retiring;
  std::int64_t submitted = 0;  // steps submitted so far

  // A token of the completed step, appended to its sequence, for the output pass.
  struct Sampled {
    Request* request = nullptr;
    SampleResult sample;
    FinishReason finish = FinishReason::kNone;  // kStop: a stop token id or EOS; kLength: a limit
    std::unique_ptr<Sequence> removed;          // the sequence, when `finish` took it out of the scheduler
  };

  EngineProfile profile;
  std::optional<Clock::time_point> last_return;  // end of the previous step() call (profiling)
  double replay_ms = 0;  // this step() call's time in the executor's profile replay

  Impl(const EngineConfig& c)
      : config(c), weights(ModelWeights::load(c.model_dir)), tokenizer(Tokenizer::load(c.model_dir)) {
    config.device = resolve_device(c.device);  // config() reports the executor actually used
    const ModelConfig& mc = weights->config();
    if (tokenizer.vocab_size() > mc.vocab_size)
      throw std::runtime_error(c.model_dir.string() + ": tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                               " tokens but the model's vocab_size is " + std::to_string(mc.vocab_size));
    if (c.profile && (c.profile_every < 1 || c.profile_warmup < 0))
      throw std::invalid_argument("profile_every must be at least 1 and profile_warmup at least 0");
    executor = make_executor(*weights, c);
    SchedulerConfig sc;
    sc.max_num_seqs = c.max_num_seqs;
    sc.max_num_batched_tokens = c.max_num_batched_tokens;
    sc.enable_prefix_caching = c.enable_prefix_caching;
    scheduler = std::make_unique<Scheduler>(sc, executor->num_kv_blocks());
    max_model_len = mc.max_position_embeddings;
  }

  bool is_eos(std::int32_t t) const {
    const auto& eos = weights->config().eos_token_ids;
    if (std::find(eos.begin(), eos.end(), t) != eos.end()) return true;
    return tokenizer.eos_id() && *tokenizer.eos_id() == t;
  }

  // The final output of a request: whatever text was held back for stop-string matching, the
  // reason, the usage. The caller takes the sequence out of the scheduler.
  RequestOutput finish_output(Request& r, FinishReason reason, RequestOutput out) {
    out.new_text += r.text.substr(r.emitted);
    r.emitted = r.text.size();
    out.finished = true;
    out.finish_reason = reason;
    const Sequence* seq = r.seq;
    out.prompt_tokens = seq->num_prompt;
    out.completion_tokens = seq->num_output();
    out.cached_prompt_tokens = seq->num_cached_prompt;
    return out;
  }

  // Called with no step in flight, or right after one completed: the tokens of cancelled
  // requests in it were dropped, so the text returned so far is the request's output.
  void finish_cancelled(std::vector<RequestOutput>& outputs) {
    for (const auto& id : cancelled) {
      auto it = requests.find(id);
      if (it == requests.end()) continue;
      RequestOutput out;
      out.id = id;
      outputs.push_back(finish_output(it->second, FinishReason::kCancelled, std::move(out)));
      scheduler->remove(it->second.seq);
      requests.erase(it);
    }
    cancelled.clear();
  }

  // Schedules the next step and submits it to the executor; false when nothing is runnable.
  bool submit_next(Laps& laps, StepTimes& t) {
    SchedulerOutput sched = scheduler->schedule();
    laps.lap(t.schedule_ms);
    if (sched.empty()) return false;
    StepBatch batch = scheduler->make_batch(sched);
    const std::int64_t n = submitted++;
    batch.profile = config.profile && n >= config.profile_warmup && (n - config.profile_warmup) % config.profile_every == 0;
    laps.lap(t.make_batch_ms);
    executor->submit(batch);
    laps.lap(t.submit_ms);
    in_flight = InFlight{std::move(sched), batch.profile};
    return true;
  }

  // Waits for the step in flight and applies it: commit, statistics, and each sampled token
  // appended to its sequence with the checks the next schedule needs (stop token ids, EOS,
  // max_tokens, the context). Sequences those finish leave the scheduler here; their text and
  // outputs come in build_outputs. Tokens of cancelled and retiring sequences are dropped.
  std::vector<Sampled> complete(Laps& laps, StepTimes& t) {
    const InFlight f = std::move(*in_flight);
    in_flight.reset();
    StepResult result = executor->wait();
    laps.lap(t.wait_ms);
    if (result.gpu_profile) {
      const GpuStepProfile& g = *result.gpu_profile;
      replay_ms = g.replay_host_ms;  // the profiler's time, not the step's
      t.wait_ms -= replay_ms;
      t.gpu_steps = 1;
      t.graph_steps = g.graph ? 1 : 0;
      t.gpu_step_ms = g.step_ms;
      t.gpu_ms = g.category_ms;
    }
    const SchedulerOutput& sched = f.sched;
    scheduler->commit(sched);

    for (const auto& s : sched.seqs) {  // prompt tokens computed this step (recomputes included)
      const int start = s.seq->num_computed - s.num_new_tokens;
      stats.prompt_tokens += std::max(0, std::min(s.seq->num_prompt, s.seq->num_computed) - start);
    }
    std::vector<Sampled> sampled;
    std::size_t sample_index = 0;
    for (const auto& s : sched.seqs) {
      if (!s.samples) continue;
      SampleResult& sample = result.samples[sample_index++];
      Sequence* seq = s.seq;
      if (std::find(retiring.begin(), retiring.end(), seq) != retiring.end()) continue;
      Request& r = requests.at(seq->id);
      if (r.cancel) continue;
      if (seq->num_output() == 0) {
        stats.prefix_hit_tokens += seq->num_cached_prompt;
        stats.prefix_query_tokens += seq->num_prompt;
      }
      seq->tokens.push_back(sample.token);
      ++stats.generated_tokens;
      const SamplingParams& p = seq->params;
      Sampled x;
      x.request = &r;
      x.sample = std::move(sample);
      const std::int32_t token = x.sample.token;
      if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end() ||
          (!p.ignore_eos && is_eos(token))) {
        x.finish = FinishReason::kStop;
      } else if (seq->num_output() >= p.max_tokens || seq->num_tokens() >= max_model_len) {
        x.finish = FinishReason::kLength;
      }
      if (x.finish != FinishReason::kNone) x.removed = scheduler->remove(seq);
      sampled.push_back(std::move(x));
    }
    for (Sequence* seq : retiring) scheduler->remove(seq);
    retiring.clear();

    ++stats.steps;
    stats.last_step_batch = static_cast<int>(sched.seqs.size());
    stats.last_step_tokens = sched.num_tokens;
    t.steps = f.profile ? 1 : 0;
    t.sequences = static_cast<std::int64_t>(sched.seqs.size());
    t.tokens = sched.num_tokens;
    laps.lap(t.update_ms);
    return sampled;
  }

  // A sequence a stop string finished leaves the scheduler now, or, when the step in flight
  // computes it, once that step completes.
  void retire(Sequence* seq) {
    if (in_flight && std::any_of(in_flight->sched.seqs.begin(), in_flight->sched.seqs.end(),
                                 [&](const ScheduledSeq& s) { return s.seq == seq; })) {
      retiring.push_back(seq);
    } else {
      scheduler->remove(seq);
    }
  }

  // The output pass over the completed step's tokens: text deltas, stop strings, finish reasons.
  // With async_output it runs while the device computes the next step.
  void build_outputs(std::vector<Sampled>& sampled, std::vector<RequestOutput>& outputs) {
    for (Sampled& x : sampled) {
      Request& r = *x.request;
      Sequence* seq = r.seq;
      const SamplingParams& p = seq->params;
      const std::int32_t token = x.sample.token;
      RequestOutput out;
      out.id = seq->id;
      out.new_token_ids.push_back(token);
      if (p.logprobs > 0) out.new_logprobs.push_back(std::move(x.sample));
      out.prompt_tokens = seq->num_prompt;
      out.completion_tokens = seq->num_output();
      out.cached_prompt_tokens = seq->num_cached_prompt;

      FinishReason reason = x.finish == FinishReason::kStop ? FinishReason::kStop : FinishReason::kNone;
      if (reason == FinishReason::kNone) {
        r.text += r.decoder.push(token);
        // Stop strings: search only the region new text could complete.
        const std::size_t from = r.emitted >= r.max_stop ? r.emitted - r.max_stop : 0;
        std::size_t cut = std::string::npos;
        for (const auto& stop : p.stop) {
          const std::size_t pos = r.text.find(stop, from);
          if (pos != std::string::npos) cut = std::min(cut, pos);
        }
        if (cut != std::string::npos) {
          r.text.resize(std::max(cut, r.emitted));
          reason = FinishReason::kStop;
        } else if (x.finish == FinishReason::kLength) {
          r.text += r.decoder.flush();
          reason = FinishReason::kLength;
        }
      }
      if (reason != FinishReason::kNone) {
        const std::string id = seq->id;
        outputs.push_back(finish_output(r, reason, std::move(out)));
        if (!x.removed) retire(seq);  // a stop string: the sequence may be in the step in flight
        requests.erase(id);
        continue;
      }
      // Hold back the last max_stop - 1 bytes: they may be the start of a stop string.
      const std::size_t hold = r.max_stop > 0 ? r.max_stop - 1 : 0;
      if (r.text.size() > r.emitted + hold) {
        const std::size_t upto = utf8_safe_prefix(r.text, r.text.size() - hold);
        if (upto > r.emitted) {
          out.new_text = r.text.substr(r.emitted, upto - r.emitted);
          r.emitted = upto;
        }
      }
      outputs.push_back(std::move(out));
    }
  }

  // One Engine::step(): complete a step (submitting it first when none is in flight), then,
  // with async_output, submit the next one before building the completed step's outputs. False
  // when there was nothing to run.
  bool step(std::vector<RequestOutput>& outputs, StepTimes& t) {
    Laps laps(config.profile);
    if (!in_flight) {
      finish_cancelled(outputs);
      laps.lap(t.update_ms);
      if (!submit_next(laps, t)) return false;
    }
    std::vector<Sampled> sampled = complete(laps, t);
    finish_cancelled(outputs);
    laps.lap(t.update_ms);
    if (config.async_output) submit_next(laps, t);
    build_outputs(sampled, outputs);
    laps.lap(t.outputs_ms);
    return true;
  }
};

Engine::Engine(const EngineConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Engine::~Engine() = default;

const ModelConfig& Engine::model_config() const { return impl_->weights->config(); }
const Tokenizer& Engine::tokenizer() const { return impl_->tokenizer; }
const EngineConfig& Engine::config() const { return impl_->config; }

std::string Engine::describe() const {
  const ModelConfig& c = model_config();
  return std::string(arch_name(c.arch)) + " " + std::to_string(c.num_layers) + " layers, hidden " +
         std::to_string(c.hidden_size) + (c.quant.awq ? ", AWQ w4 g" + std::to_string(c.quant.group_size) : ", fp16") +
         "; " + impl_->executor->describe();
}

void Engine::check_request(const GenerationRequest& request) const {
  const Impl& m = *impl_;
  const ModelConfig& c = model_config();
  if (request.prompt_ids.empty()) throw std::invalid_argument("the prompt is empty");
  for (auto t : request.prompt_ids)
    if (t < 0 || t >= c.vocab_size)
      throw std::invalid_argument("prompt token id " + std::to_string(t) + " is outside the vocabulary (size " +
                                  std::to_string(c.vocab_size) + ")");
  const int len = static_cast<int>(request.prompt_ids.size());
  if (len >= m.max_model_len)
    throw std::invalid_argument("the prompt has " + std::to_string(len) + " tokens; the model's context is " +
                                std::to_string(m.max_model_len) + " (room for at least one new token is needed)");
  const int need_blocks = m.scheduler->blocks().blocks_for(len + 1);
  if (need_blocks > m.scheduler->blocks().num_blocks())
    throw std::invalid_argument("the prompt needs " + std::to_string(need_blocks) + " KV-cache blocks; the pool has " +
                                std::to_string(m.scheduler->blocks().num_blocks()));
  request.params.validate(c.vocab_size);
}

void Engine::add_request(GenerationRequest request) {
  Impl& m = *impl_;
  if (m.requests.count(request.id)) throw std::invalid_argument("request id " + request.id + " is already active");
  check_request(request);
  const int len = static_cast<int>(request.prompt_ids.size());

  auto seq = std::make_unique<Sequence>();
  seq->id = request.id;
  seq->priority = request.priority;
  seq->params = std::move(request.params);
  seq->tokens = std::move(request.prompt_ids);
  seq->num_prompt = len;
  Impl::Request r(seq.get(), m.tokenizer);
  r.decoder.prime(seq->tokens);
  for (const auto& s : seq->params.stop) r.max_stop = std::max(r.max_stop, s.size());
  m.requests.emplace(seq->id, std::move(r));
  m.scheduler->add(std::move(seq));
}

bool Engine::cancel(const std::string& id) {
  auto it = impl_->requests.find(id);
  if (it == impl_->requests.end() || it->second.cancel) return false;
  it->second.cancel = true;
  impl_->cancelled.push_back(id);
  return true;
}

bool Engine::has_unfinished() const {
  return impl_->scheduler->has_unfinished() || !impl_->cancelled.empty() || impl_->in_flight.has_value();
}

EngineStats Engine::stats() const {
  EngineStats s = impl_->stats;
  s.waiting = impl_->scheduler->num_waiting();
  s.running = impl_->scheduler->num_running();
  s.kv_blocks_total = impl_->scheduler->blocks().num_blocks();
  s.kv_blocks_used = impl_->scheduler->blocks().num_used();
  s.preemptions = impl_->scheduler->total_preemptions();
  return s;
}

std::vector<DeviceStatus> Engine::devices() const { return impl_->executor->devices(); }

std::vector<RequestOutput> Engine::step() {
  Impl& m = *impl_;
  std::vector<RequestOutput> outputs;
  const auto start = Clock::now();
  StepTimes t;
  m.replay_ms = 0;
  const bool stepped = m.step(outputs, t);
  const auto end = Clock::now();
  if (stepped) m.stats.last_step_ms = ms_between(start, end) - m.replay_ms;
  if (m.config.profile) {
    if (stepped && t.steps > 0) {
      t.caller_ms = m.last_return ? ms_between(*m.last_return, start) : 0;
      t.period_ms = ms_between(m.last_return ? *m.last_return : start, end) - m.replay_ms;
      (t.tokens == t.sequences ? m.profile.decode : m.profile.mixed).add(t);
    }
    m.last_return = end;
  }
  return outputs;
}

EngineProfile Engine::profile() const { return impl_->profile; }

}  // namespace awqd
