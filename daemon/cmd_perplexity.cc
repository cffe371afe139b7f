// `awqd perplexity` (SPEC section 6): perplexity of a model on a text over non-overlapping
// windows (engine/perplexity.h), through the same executor the engine uses (--device).
//
//   awqd perplexity --model DIR --text FILE [--window 512] [--device cpu|cuda] [--json]
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/cli.h"
#include "engine/engine.h"
#include "engine/executor_factory.h"
#include "engine/model_weights.h"
#include "engine/perplexity.h"
#include "engine/text_corpus.h"
#include "engine/text_file.h"
#include "engine/tokenizer.h"

namespace awqd::cli {
namespace {

struct PerplexityArgs {
  std::string model, text, device = "cpu";
  int window = 512;
  bool json = false;
};

// Windows the CPU executor's KV pool holds at once (more windows per step: bigger matmuls).
constexpr int kCpuWindowsPerStep = 4;

int run(const PerplexityArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  const auto weights = ModelWeights::load(a.model);
  const Tokenizer tok = Tokenizer::load(a.model);
  const auto ids = tokenize_paragraphs(tok, read_file(a.text));
  EngineConfig ec;
  ec.model_dir = a.model;
  ec.device = a.device;
  ec.num_kv_blocks_override = kCpuWindowsPerStep * ((a.window + kKvBlockSize - 1) / kKvBlockSize);
  const auto executor = make_executor(*weights, ec);
  const PerplexityResult r =
      evaluate_perplexity(*executor, weights->config().vocab_size, ids, a.window,
                          std::int64_t{64} << 20, [&](int done, int total) {
                            if (!a.json) std::fprintf(stderr, "\rwindow %d of %d", done, total);
                          });
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (a.json) {
    nlohmann::json j = {{"model", a.model},
                        {"text", a.text},
                        {"window", a.window},
                        {"perplexity", r.perplexity()},
                        {"tokens_evaluated", r.tokens},
                        {"windows", r.windows},
                        {"text_tokens", ids.size()},
                        {"device", executor->describe()},
                        {"seconds", secs}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr, "\n");
    std::printf(
        "perplexity %.4f  tokens evaluated %lld  (%zu tokens, %d windows of %d, %.1f s, %s)\n",
        r.perplexity(), static_cast<long long>(r.tokens), ids.size(), r.windows, a.window, secs,
        executor->describe().c_str());
  }
  return 0;
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  CLI::App* sub = app.add_subcommand(
      "perplexity", "Perplexity of a model on a text (non-overlapping windows, no BOS)");
  sub->add_option("--model", a->model, "Model directory (fp16/bf16 or AWQ)")
      ->required()
      ->type_name("DIR");
  sub->add_option("--text", a->text,
                  "Text file: paragraphs separated by blank lines, joined by the newline token")
      ->required()
      ->type_name("FILE");
  sub->add_option("--window", a->window, "Tokens per window")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  sub->add_option("--device", a->device, "Executor: cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_flag("--json", a->json, "Print one JSON object");
  set_action(sub, [a] { return run(*a); });
}

}  // namespace awqd::cli
