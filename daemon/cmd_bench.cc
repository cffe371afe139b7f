// `awqd bench`: offline throughput benchmark of the engine (SPEC section 8). Every request is
// queued at the start (as vLLM's benchmark_throughput does); the engine runs to completion.
// Workloads:
//   decode-1        1 prompt of 128 tokens, 256 new: single-sequence decode tokens/s
//   bulk-3072-512   1000 prompts of 3072 tokens, 512 new each (ignore_eos)
//   bulk-512-256    2000 prompts of 512 tokens, 256 new
//   shared-prefix   1000 prompts = one 2048-token prefix + 256 own tokens, 128 new
//   custom          --num-prompts, --input-len, --output-len (and --prefix-len) given explicitly
// --replicas N runs N data-parallel engines (engine/engine_group.h), each on --tensor-parallel
// GPUs (consecutive ids, or --gpus split in order), or --gpu-groups '[[0,1],[2,3]]' one per group,
// fed from one front; step statistics are then summed over the replicas' latest steps.
// Prompts are random token ids (seeded); greedy sampling, ignore_eos, so every request produces
// exactly output-len tokens. Prints a summary (or JSON with --json) and writes JSON to --out.
// --profile samples every --profile-every-th step after --profile-warmup and adds where their
// time went (EngineConfig::profile): host time per part of Engine::step, and on the GPU the step
// as it ran and an eager replay of it per kernel category (docs/PERF.md, "How to read --profile").
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <unistd.h>

#include "daemon/cli.h"
#include "engine/engine.h"
#include "engine/engine_group.h"

namespace awqd::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  EngineConfig engine;
  int replicas = 1;
  std::string gpu_groups;  // JSON, e.g. [[0,1],[2,3]]: one replica per group
  std::string workload = "bulk-512-256";
  int num_prompts = 0, input_len = 0, output_len = 0, prefix_len = 0;
  unsigned seed = 0;
  std::string out;
  bool json = false;
  bool quiet = false;
};

struct Workload {
  int num_prompts, input_len, output_len, prefix_len;
};

Workload resolve(const BenchOptions& o) {
  Workload w{0, 0, 0, 0};
  if (o.workload == "decode-1") w = {1, 128, 256, 0};
  else if (o.workload == "bulk-3072-512") w = {1000, 3072, 512, 0};
  else if (o.workload == "bulk-512-256") w = {2000, 512, 256, 0};
  else if (o.workload == "shared-prefix") w = {1000, 2048 + 256, 128, 2048};
  if (o.num_prompts > 0) w.num_prompts = o.num_prompts;
  if (o.input_len > 0) w.input_len = o.input_len;
  if (o.output_len > 0) w.output_len = o.output_len;
  if (o.prefix_len > 0) w.prefix_len = o.prefix_len;
  if (w.num_prompts <= 0 || w.input_len <= 0 || w.output_len <= 0)
    throw CLI::ValidationError("--workload custom needs --num-prompts, --input-len and --output-len");
  if (w.prefix_len >= w.input_len) throw CLI::ValidationError("--prefix-len must be shorter than --input-len");
  return w;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(idx);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

void progress(int done, int total, double elapsed, std::int64_t out_tokens) {
  const int width = 30;
  const int fill = total ? done * width / total : width;
  const double rate = elapsed > 0 ? static_cast<double>(out_tokens) / elapsed : 0;
  const double eta = done > 0 ? elapsed * (total - done) / done : 0;
  std::fprintf(stderr, "\r[%.*s%*s] %d/%d requests  %.0f out tok/s  %.0fs elapsed  ETA %.0fs   ", fill,
               "==============================", width - fill, "", done, total, rate, elapsed, eta);
}

// One Engine, or replicas behind an EngineGroup, with the calls the benchmark makes.
class BenchTarget {
 public:
  explicit BenchTarget(const BenchOptions& o) {
    if (!o.gpu_groups.empty()) {
      group_ = std::make_unique<EngineGroup>(o.engine, EngineGroup::parse_groups(o.gpu_groups));
      return;
    }
    if (o.replicas <= 1) {
      engine_ = std::make_unique<Engine>(o.engine);
      return;
    }
    const int tp = o.engine.tensor_parallel;
    std::vector<std::vector<int>> groups = EngineGroup::consecutive_groups(o.replicas, tp);
    if (!o.engine.gpus.empty()) {
      if (static_cast<int>(o.engine.gpus.size()) != o.replicas * tp)
        throw CLI::ValidationError("--gpus needs replicas x tensor_parallel ids");
      for (int r = 0; r < o.replicas; ++r)
        groups[r].assign(o.engine.gpus.begin() + r * tp, o.engine.gpus.begin() + (r + 1) * tp);
    }
    group_ = std::make_unique<EngineGroup>(o.engine, groups);
  }
  const ModelConfig& model_config() const { return engine_ ? engine_->model_config() : group_->model_config(); }
  const Tokenizer& tokenizer() const { return engine_ ? engine_->tokenizer() : group_->tokenizer(); }
  std::string describe() const { return engine_ ? engine_->describe() : group_->describe(); }
  void add_request(GenerationRequest r) {
    if (engine_) {
      engine_->add_request(std::move(r));
    } else {
      group_->add_request(std::move(r));
    }
  }
  std::vector<RequestOutput> step() { return engine_ ? engine_->step() : group_->step(); }
  bool has_unfinished() const { return engine_ ? engine_->has_unfinished() : group_->has_unfinished(); }
  EngineProfile profile() const {
    if (engine_) return engine_->profile();
    EngineProfile sum;
    for (const EngineProfile& p : group_->profiles()) sum.add(p);
    return sum;
  }
  EngineStats stats() const {
    if (engine_) return engine_->stats();
    EngineStats sum;
    for (const EngineStats& s : group_->stats()) {
      sum.kv_blocks_total += s.kv_blocks_total;
      sum.kv_blocks_used += s.kv_blocks_used;
      sum.preemptions += s.preemptions;
      sum.prompt_tokens += s.prompt_tokens;
      sum.prefix_hit_tokens += s.prefix_hit_tokens;
      sum.prefix_query_tokens += s.prefix_query_tokens;
      sum.last_step_batch += s.last_step_batch;
    }
    return sum;
  }

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<EngineGroup> group_;
};

double per(double total, std::int64_t n) { return n > 0 ? total / static_cast<double>(n) : 0.0; }

// Means per sampled step, host parts in the order of a step.
nlohmann::json profile_json(const StepTimes& t) {
  const auto n = t.steps;
  nlohmann::json j = {
      {"steps", n},
      {"sequences_per_step", per(static_cast<double>(t.sequences), n)},
      {"tokens_per_step", per(static_cast<double>(t.tokens), n)},
      {"host_ms",
       {{"period", per(t.period_ms, n)},
        {"wait", per(t.wait_ms, n)},
        {"update", per(t.update_ms, n)},
        {"schedule", per(t.schedule_ms, n)},
        {"make_batch", per(t.make_batch_ms, n)},
        {"submit", per(t.submit_ms, n)},
        {"outputs", per(t.outputs_ms, n)},
        {"caller", per(t.caller_ms, n)},
        {"other", per(t.period_ms - t.host_sum_ms(), n)}}},
  };
  if (t.gpu_steps > 0) {
    const auto g = t.gpu_steps;
    nlohmann::json gpu = {{"step", per(t.gpu_step_ms, g)}};
    double replay = 0;
    for (int c = 0; c < kGpuCategories; ++c) {
      gpu[gpu_category_name(static_cast<GpuCategory>(c))] = per(t.gpu_ms[c], g);
      replay += t.gpu_ms[c];
    }
    gpu["replay"] = per(replay, g);
    j["gpu_steps"] = g;
    j["graph_steps"] = t.graph_steps;
    j["gpu_ms"] = gpu;
  }
  return j;
}

// The breakdown table: one column per kind of step that was sampled.
void print_profile(const nlohmann::json& prof) {
  std::string line;  // one row, printed without its trailing padding
  auto cell = [&line](const char* text, std::size_t width) {  // two spaces, then text padded to width
    const std::size_t n = std::strlen(text);
    line += "  ";
    line += text;
    if (n < width) line.append(width - n, ' ');
  };
  auto end_row = [&line] {
    line.erase(line.find_last_not_of(' ') + 1);
    std::printf("%s\n", line.c_str());
    line.clear();
  };
  std::vector<std::pair<std::string, const nlohmann::json*>> cols;
  for (const char* kind : {"decode", "mixed"})
    if (prof[kind]["steps"].get<std::int64_t>() > 0) cols.emplace_back(kind, &prof[kind]);
  std::printf("profile  1 step in %d sampled after the first %d (async_output %s); mean ms per sampled step\n",
              prof["every"].get<int>(), prof["warmup"].get<int>(), prof["async_output"].get<bool>() ? "on" : "off");
  if (cols.empty()) {
    std::printf("  no step sampled (fewer steps than the warm-up)\n");
    return;
  }
  cell("", 34);
  for (const auto& [kind, c] : cols) {
    char head[64];
    std::snprintf(head, sizeof head, "%s (%lld steps, %.0f tok)", kind.c_str(),
                  static_cast<long long>((*c)["steps"].get<std::int64_t>()), (*c)["tokens_per_step"].get<double>());
    cell(head, 24);
  }
  end_row();
  auto row = [&](const char* label, const char* group, const char* key, const char* of) {
    cell(label, 34);
    for (const auto& [kind, c] : cols) {
      if (!c->contains(group)) {
        cell("-", 24);
        continue;
      }
      const double v = (*c)[group][key].get<double>(), whole = (*c)[group][of].get<double>();
      char value[64];
      std::snprintf(value, sizeof value, "%9.3f %6.1f%%", v, whole > 0 ? 100 * v / whole : 0.0);
      cell(value, 24);
    }
    end_row();
  };
  row("host: period (end to end)", "host_ms", "period", "period");
  row("  wait for the device", "host_ms", "wait", "period");
  row("  update (tokens, id checks)", "host_ms", "update", "period");
  row("  schedule", "host_ms", "schedule", "period");
  row("  make_batch", "host_ms", "make_batch", "period");
  row("  submit (staging, launches)", "host_ms", "submit", "period");
  row("  outputs (detokenize, stops)", "host_ms", "outputs", "period");
  row("  caller (outside Engine::step)", "host_ms", "caller", "period");
  row("  other", "host_ms", "other", "period");
  bool gpu = false;
  for (const auto& [kind, c] : cols) gpu |= c->contains("gpu_ms");
  if (!gpu) return;
  cell("gpu: step as run, % of period", 34);
  for (const auto& [kind, c] : cols) {
    char value[64] = "-";
    if (c->contains("gpu_ms"))
      std::snprintf(value, sizeof value, "%9.3f %6.1f%%", (*c)["gpu_ms"]["step"].get<double>(),
                    100 * (*c)["gpu_ms"]["step"].get<double>() / (*c)["host_ms"]["period"].get<double>());
    cell(value, 24);
  }
  end_row();
  row("gpu: eager replay, per category", "gpu_ms", "replay", "replay");
  for (int k = 0; k < kGpuCategories; ++k) {
    const char* name = gpu_category_name(static_cast<GpuCategory>(k));
    const std::string label = std::string("  ") + name;
    row(label.c_str(), "gpu_ms", name, "replay");
  }
}

int run_bench(const BenchOptions& o) {
  const Workload w = resolve(o);
  const auto t_load = Clock::now();
  BenchTarget engine(o);
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
  const int vocab = std::min(engine.model_config().vocab_size, engine.tokenizer().vocab_size());
  if (w.input_len + w.output_len > engine.model_config().max_position_embeddings)
    throw std::runtime_error("input + output length " + std::to_string(w.input_len + w.output_len) +
                             " exceeds the model's context " + std::to_string(engine.model_config().max_position_embeddings));

  std::mt19937 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> id(std::min(3, vocab - 1), vocab - 1);
  std::vector<std::int32_t> prefix(w.prefix_len);
  for (auto& t : prefix) t = id(rng);
  struct Track {
    Clock::time_point first, last;
    int tokens = 0;
  };
  std::vector<Track> track(w.num_prompts);
  std::vector<double> itl_ms;
  itl_ms.reserve(static_cast<std::size_t>(w.num_prompts) * w.output_len);

  const auto t0 = Clock::now();
  for (int i = 0; i < w.num_prompts; ++i) {
    GenerationRequest r;
    r.id = std::to_string(i);
    r.prompt_ids = prefix;
    while (static_cast<int>(r.prompt_ids.size()) < w.input_len) r.prompt_ids.push_back(id(rng));
    r.params.temperature = 0;
    r.params.max_tokens = w.output_len;
    r.params.ignore_eos = true;
    engine.add_request(std::move(r));
  }
  int done = 0;
  std::int64_t steps = 0, seq_steps = 0, out_tokens = 0;
  double kv_sum = 0, kv_max = 0;
  auto last_print = Clock::now();
  const bool show = !o.quiet && ::isatty(2);
  while (engine.has_unfinished()) {
    const auto outs = engine.step();
    const auto now = Clock::now();
    const EngineStats st = engine.stats();
    ++steps;
    seq_steps += st.last_step_batch;
    const double kv = st.kv_blocks_total ? static_cast<double>(st.kv_blocks_used) / st.kv_blocks_total : 0;
    kv_sum += kv;
    kv_max = std::max(kv_max, kv);
    for (const auto& out : outs) {
      Track& t = track[std::stoi(out.id)];
      for (std::size_t k = 0; k < out.new_token_ids.size(); ++k) {
        if (t.tokens == 0) t.first = now;
        else itl_ms.push_back(std::chrono::duration<double, std::milli>(now - t.last).count());
        t.last = now;
        ++t.tokens;
        ++out_tokens;
      }
      if (out.finished) {
        ++done;
        if (out.finish_reason == FinishReason::kError) throw std::runtime_error("request " + out.id + " failed: " + out.error);
      }
    }
    if (show && std::chrono::duration<double>(now - last_print).count() > 0.5) {
      progress(done, w.num_prompts, std::chrono::duration<double>(now - t0).count(), out_tokens);
      last_print = now;
    }
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (show) {
    progress(done, w.num_prompts, total_s, out_tokens);
    std::fprintf(stderr, "\n");
  }
  std::vector<double> ttft_ms;
  for (const auto& t : track) ttft_ms.push_back(std::chrono::duration<double, std::milli>(t.first - t0).count());
  const EngineStats st = engine.stats();
  const double in_tokens = static_cast<double>(w.num_prompts) * w.input_len;
  nlohmann::json j = {
      {"workload", o.workload},
      {"model", engine.describe()},
      {"replicas", o.gpu_groups.empty() ? std::max(1, o.replicas) : static_cast<int>(EngineGroup::parse_groups(o.gpu_groups).size())},
      {"num_prompts", w.num_prompts},
      {"input_len", w.input_len},
      {"output_len", w.output_len},
      {"prefix_len", w.prefix_len},
      {"load_s", load_s},
      {"total_s", total_s},
      {"requests_per_s", w.num_prompts / total_s},
      {"input_tokens_per_s", in_tokens / total_s},
      {"output_tokens_per_s", static_cast<double>(out_tokens) / total_s},
      {"ttft_ms", {{"p50", percentile(ttft_ms, 50)}, {"p99", percentile(ttft_ms, 99)}}},
      {"itl_ms", {{"p50", percentile(itl_ms, 50)}, {"p99", percentile(itl_ms, 99)}}},
      {"steps", steps},
      {"batch_occupancy", steps ? static_cast<double>(seq_steps) / static_cast<double>(steps) : 0.0},
      {"kv_use", {{"mean", steps ? kv_sum / static_cast<double>(steps) : 0.0}, {"max", kv_max}}},
      {"kv_blocks", st.kv_blocks_total},
      {"preemptions", st.preemptions},
      {"prefix_hit_rate", st.prefix_query_tokens ? static_cast<double>(st.prefix_hit_tokens) / static_cast<double>(st.prefix_query_tokens) : 0.0},
      {"computed_prompt_tokens", st.prompt_tokens},
  };
  if (o.engine.profile) {
    const EngineProfile p = engine.profile();
    j["profile"] = {{"every", o.engine.profile_every},
                    {"warmup", o.engine.profile_warmup},
                    {"async_output", o.engine.async_output},
                    {"fused_decode_mlp", o.engine.fused_decode_mlp},
                    {"fold_norms", o.engine.fold_norms},
                    {"decode", profile_json(p.decode)},
                    {"mixed", profile_json(p.mixed)}};
  }
  if (w.num_prompts == 1 && track[0].tokens > 1) {
    // Single sequence: decode rate after the first token (what decode-1 measures).
    const double decode_s = std::chrono::duration<double>(track[0].last - track[0].first).count();
    j["decode_tokens_per_s"] = (track[0].tokens - 1) / decode_s;
  }
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << j.dump(2) << "\n";
    if (!f) throw std::runtime_error(o.out + ": cannot write");
  }
  if (o.json) {
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("workload %s: %d prompts x %d in (%d shared) -> %d out\n", o.workload.c_str(), w.num_prompts,
                w.input_len, w.prefix_len, w.output_len);
    std::printf("model    %s\n", engine.describe().c_str());
    std::printf("time     %.2f s (load %.1f s)\n", total_s, load_s);
    std::printf("requests %.2f /s   input %.0f tok/s   output %.0f tok/s\n", w.num_prompts / total_s,
                in_tokens / total_s, static_cast<double>(out_tokens) / total_s);
    if (j.contains("decode_tokens_per_s")) std::printf("decode   %.1f tok/s (one sequence)\n", j["decode_tokens_per_s"].get<double>());
    std::printf("TTFT     p50 %.1f ms  p99 %.1f ms    ITL p50 %.2f ms  p99 %.2f ms\n", percentile(ttft_ms, 50),
                percentile(ttft_ms, 99), percentile(itl_ms, 50), percentile(itl_ms, 99));
    std::printf("batch    %.1f sequences/step over %lld steps   KV use mean %.0f%% max %.0f%% of %d blocks\n",
                j["batch_occupancy"].get<double>(), static_cast<long long>(steps), 100 * j["kv_use"]["mean"].get<double>(),
                100 * kv_max, st.kv_blocks_total);
    std::printf("preemptions %lld   prefix cache hit rate %.1f%%\n", static_cast<long long>(st.preemptions),
                100 * j["prefix_hit_rate"].get<double>());
    if (j.contains("profile")) print_profile(j["profile"]);
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  o->engine.device = "cuda";
  CLI::App* cmd = app.add_subcommand("bench", "Offline throughput benchmark (SPEC section 8 workloads)");
  add_engine_flags(cmd, o->engine);
  cmd->add_option("--replicas", o->replicas, "Data-parallel engines, each on --tensor-parallel GPUs")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--gpu-groups", o->gpu_groups, "One replica per GPU group, e.g. [[0,1],[2,3]] (instead of --replicas)");
  cmd->add_option("--workload", o->workload, "decode-1, bulk-3072-512, bulk-512-256, shared-prefix or custom")
      ->check(CLI::IsMember({"decode-1", "bulk-3072-512", "bulk-512-256", "shared-prefix", "custom"}))
      ->capture_default_str();
  cmd->add_option("--num-prompts", o->num_prompts, "Override the workload's number of prompts");
  cmd->add_option("--input-len", o->input_len, "Override the prompt length (tokens)");
  cmd->add_option("--output-len", o->output_len, "Override the generated tokens per prompt");
  cmd->add_option("--prefix-len", o->prefix_len, "Tokens shared by every prompt's start");
  cmd->add_option("--seed", o->seed, "Seed of the random prompts")->capture_default_str();
  cmd->add_option("--out", o->out, "Write the results as JSON to this file");
  cmd->add_flag("--json", o->json, "Print JSON instead of the summary");
  cmd->add_flag("--quiet", o->quiet, "No progress bar");
  cmd->add_flag("--profile", o->engine.profile,
                "Time sampled steps: host parts of a step, GPU time per kernel category (eager replay)");
  cmd->add_option("--profile-every", o->engine.profile_every, "With --profile: sample every n-th step")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--profile-warmup", o->engine.profile_warmup, "With --profile: steps never sampled at the start")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  set_action(cmd, [o] { return run_bench(*o); });
}

}  // namespace awqd::cli
