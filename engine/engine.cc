// Engine: the request lifecycle around the scheduler and an executor. Per request it keeps the
// streaming detokenizer and the stop-string state; per step it schedules, builds the flat batch,
// runs the executor, appends sampled tokens, and decides which requests finished and why.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
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

}  // namespace

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

  Impl(const EngineConfig& c)
      : config(c), weights(ModelWeights::load(c.model_dir)), tokenizer(Tokenizer::load(c.model_dir)) {
    const ModelConfig& mc = weights->config();
    if (tokenizer.vocab_size() > mc.vocab_size)
      throw std::runtime_error(c.model_dir.string() + ": tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                               " tokens but the model's vocab_size is " + std::to_string(mc.vocab_size));
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

  RequestOutput finish(Request& r, FinishReason reason, RequestOutput out) {
    // Return whatever text was held back for stop-string matching.
    out.new_text += r.text.substr(r.emitted);
    r.emitted = r.text.size();
    out.finished = true;
    out.finish_reason = reason;
    Sequence* seq = r.seq;
    out.prompt_tokens = seq->num_prompt;
    out.completion_tokens = seq->num_output();
    out.cached_prompt_tokens = seq->num_cached_prompt;
    scheduler->remove(seq);
    return out;
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

bool Engine::has_unfinished() const { return impl_->scheduler->has_unfinished() || !impl_->cancelled.empty(); }

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
  for (const auto& id : m.cancelled) {
    auto it = m.requests.find(id);
    if (it == m.requests.end()) continue;
    RequestOutput out;
    out.id = id;
    outputs.push_back(m.finish(it->second, FinishReason::kCancelled, std::move(out)));
    m.requests.erase(it);
  }
  m.cancelled.clear();

  const auto t0 = std::chrono::steady_clock::now();
  const SchedulerOutput sched = m.scheduler->schedule();
  if (sched.empty()) return outputs;
  const StepBatch batch = m.scheduler->make_batch(sched);
  const StepResult result = m.executor->execute(batch);
  m.scheduler->commit(sched);

  for (const auto& s : sched.seqs) {  // prompt tokens computed this step (recomputes included)
    const int start = s.seq->num_computed - s.num_new_tokens;
    m.stats.prompt_tokens += std::max(0, std::min(s.seq->num_prompt, s.seq->num_computed) - start);
  }
  std::size_t sample_index = 0;
  for (const auto& s : sched.seqs) {
    if (!s.samples) continue;
    Sequence* seq = s.seq;
    const SampleResult& sample = result.samples[sample_index++];
    Impl::Request& r = m.requests.at(seq->id);
    const bool first = seq->num_output() == 0;
    if (first) {
      m.stats.prefix_hit_tokens += seq->num_cached_prompt;
      m.stats.prefix_query_tokens += seq->num_prompt;
    }
    seq->tokens.push_back(sample.token);
    ++m.stats.generated_tokens;

    RequestOutput out;
    out.id = seq->id;
    out.new_token_ids.push_back(sample.token);
    if (seq->params.logprobs > 0) out.new_logprobs.push_back(sample);
    out.prompt_tokens = seq->num_prompt;
    out.completion_tokens = seq->num_output();
    out.cached_prompt_tokens = seq->num_cached_prompt;

    const SamplingParams& p = seq->params;
    FinishReason reason = FinishReason::kNone;
    const bool stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), sample.token) != p.stop_token_ids.end();
    if (stop_id || (!p.ignore_eos && m.is_eos(sample.token))) {
      reason = FinishReason::kStop;
    } else {
      r.text += r.decoder.push(sample.token);
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
      } else if (seq->num_output() >= p.max_tokens || seq->num_tokens() >= m.max_model_len) {
        r.text += r.decoder.flush();
        reason = FinishReason::kLength;
      }
    }
    if (reason != FinishReason::kNone) {
      const std::string id = seq->id;  // finish() frees the sequence
      outputs.push_back(m.finish(r, reason, std::move(out)));
      m.requests.erase(id);
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

  ++m.stats.steps;
  m.stats.last_step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  m.stats.last_step_batch = static_cast<int>(sched.seqs.size());
  m.stats.last_step_tokens = sched.num_tokens;
  return outputs;
}

}  // namespace awqd
