// `awqd generate`: one-shot offline generation (no Redis), streaming text to stdout or printing
// one JSON object with --json. `awqd import-llama2c`: llama2.c checkpoint -> HF directory.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "daemon/cli.h"
#include "engine/engine.h"
#include "engine/llama2c.h"

namespace awqd::cli {

namespace {

struct GenerateOptions {
  EngineConfig engine;
  std::string prompt;
  std::string prompt_ids;  // JSON array
  bool chat = false;
  SamplingParams params;
  bool json = false;
};

std::vector<std::int32_t> parse_ids(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw CLI::ValidationError("--prompt-ids", "expected a JSON array of token ids, e.g. [1, 415, 21366]");
  }
  if (!j.is_array()) throw CLI::ValidationError("--prompt-ids", "expected a JSON array of token ids");
  std::vector<std::int32_t> ids;
  for (const auto& v : j) {
    if (!v.is_number_integer()) throw CLI::ValidationError("--prompt-ids", "token ids must be integers");
    ids.push_back(v.get<std::int32_t>());
  }
  return ids;
}

int run_generate(const GenerateOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  Engine engine(o.engine);
  const auto t_loaded = std::chrono::steady_clock::now();
  const Tokenizer& tok = engine.tokenizer();
  GenerationRequest req;
  req.id = "generate";
  req.params = o.params;
  if (!o.prompt_ids.empty()) {
    req.prompt_ids = parse_ids(o.prompt_ids);
  } else if (o.chat) {
    const ChatFormat format = detect_chat_format(tok);
    const std::vector<ChatMessage> messages = {{"user", o.prompt}};
    req.prompt_ids = tok.encode(render_chat(format, messages, tok), format == ChatFormat::kPlain);
  } else {
    req.prompt_ids = tok.encode(o.prompt, /*add_special_tokens=*/true);
  }
  const auto prompt_ids = req.prompt_ids;
  engine.add_request(std::move(req));

  std::string text;
  std::vector<std::int32_t> ids;
  nlohmann::json logprobs = nlohmann::json::array();
  RequestOutput last;
  double ttft_ms = -1;
  while (engine.has_unfinished()) {
    for (auto& out : engine.step()) {
      if (ttft_ms < 0 && !out.new_token_ids.empty())
        ttft_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_loaded).count();
      text += out.new_text;
      ids.insert(ids.end(), out.new_token_ids.begin(), out.new_token_ids.end());
      for (const auto& lp : out.new_logprobs) {
        nlohmann::json top = nlohmann::json::array();
        for (const auto& t : lp.top) top.push_back({{"token", t.token}, {"logprob", t.logprob}});
        logprobs.push_back({{"token", lp.token}, {"logprob", lp.logprob}, {"top", top}});
      }
      if (!o.json) {
        std::fwrite(out.new_text.data(), 1, out.new_text.size(), stdout);
        std::fflush(stdout);
      }
      if (out.finished) last = out;
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  const double gen_ms = std::chrono::duration<double, std::milli>(t1 - t_loaded).count();
  if (o.json) {
    nlohmann::json j = {
        {"prompt_token_ids", prompt_ids},
        {"text", text},
        {"token_ids", ids},
        {"finish_reason", finish_reason_name(last.finish_reason)},
        {"usage", {{"prompt_tokens", last.prompt_tokens}, {"completion_tokens", last.completion_tokens}}},
        {"timings", {{"load_ms", std::chrono::duration<double, std::milli>(t_loaded - t0).count()},
                     {"ttft_ms", ttft_ms},
                     {"total_ms", gen_ms},
                     {"tokens_per_s", gen_ms > 0 ? 1000.0 * static_cast<double>(ids.size()) / gen_ms : 0.0}}},
        {"seed", o.params.seed},
        {"model", engine.describe()},
    };
    if (o.params.logprobs > 0) j["logprobs"] = logprobs;
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("\n");
    std::fprintf(stderr, "[%s: %zu prompt + %zu generated tokens, %.1f tokens/s, finish %s]\n",
                 engine.describe().c_str(), prompt_ids.size(), ids.size(),
                 gen_ms > 0 ? 1000.0 * static_cast<double>(ids.size()) / gen_ms : 0.0,
                 finish_reason_name(last.finish_reason));
  }
  return 0;
}

}  // namespace

void add_sampling_flags(CLI::App* sub, SamplingParams& p) {
  sub->add_option("--max-tokens", p.max_tokens, "Tokens to generate at most")->capture_default_str();
  sub->add_option("--temperature", p.temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  sub->add_option("--top-p", p.top_p, "Nucleus sampling mass")->capture_default_str();
  sub->add_option("--top-k", p.top_k, "Keep the k most likely tokens; 0 disables")->capture_default_str();
  sub->add_option("--min-p", p.min_p, "Keep tokens at least min_p times the most likely")->capture_default_str();
  sub->add_option("--repetition-penalty", p.repetition_penalty, "Penalty on tokens seen in prompt or output")->capture_default_str();
  sub->add_option("--presence-penalty", p.presence_penalty, "Penalty on tokens present in the output")->capture_default_str();
  sub->add_option("--frequency-penalty", p.frequency_penalty, "Penalty per occurrence in the output")->capture_default_str();
  sub->add_option("--seed", p.seed, "Random seed (the same seed gives the same tokens)")->capture_default_str();
  sub->add_option("--stop", p.stop, "Stop string (repeatable)");
  sub->add_option("--stop-token-id", p.stop_token_ids, "Stop token id (repeatable)");
  sub->add_flag("--ignore-eos", p.ignore_eos, "Keep generating past end-of-sequence tokens");
  sub->add_option("--logprobs", p.logprobs, "Top-n log-probabilities per token (0..20)")->capture_default_str();
}

void add_engine_flags(CLI::App* sub, EngineConfig& e) {
  sub->add_option("--model", e.model_dir, "Model directory (Hugging Face layout)")->required()->check(CLI::ExistingDirectory);
  sub->add_option("--device", e.device, "auto (cuda when there is a GPU), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
  sub->add_option("--tensor-parallel", e.tensor_parallel, "GPUs per engine")->check(CLI::Range(1, 8))->capture_default_str();
  sub->add_option("--gpus", e.gpus, "GPU ids, comma-separated (default 0 .. tensor_parallel - 1)")->delimiter(',');
  sub->add_option("--gpu-memory-utilization", e.gpu_memory_utilization, "Fraction of GPU memory to use")->capture_default_str();
  sub->add_option("--max-num-seqs", e.max_num_seqs, "Sequences running at once at most")->capture_default_str();
  sub->add_option("--max-num-batched-tokens", e.max_num_batched_tokens, "Token budget per step")->capture_default_str();
  sub->add_flag("!--no-prefix-caching", e.enable_prefix_caching, "Disable automatic prefix caching");
  sub->add_flag("!--no-cuda-graphs", e.cuda_graphs, "Disable CUDA graphs for decode steps");
  sub->add_flag("--deterministic", e.deterministic, "Batch-invariant logits (slower)");
  sub->add_option("--fp16-weight-cache", e.fp16_weight_cache,
                  "fp16 copies of the AWQ weights for large steps (64+ tokens, 128+ on Hopper): auto (if they take at most half of "
                  "the KV pool's memory), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  sub->add_flag("--fused-decode-mlp", e.fused_decode_mlp,
                "Experimental: a layer's MLP half as one persistent kernel in steps of 1-8 tokens (CUDA, one GPU; "
                "measured slower than the separate kernels so far)");
  sub->add_flag("!--no-fold-norms", e.fold_norms,
                "Run the residual add and RMSNorm as their own kernel in small steps, instead of folded into the GEMMs "
                "around them");
  sub->add_flag("!--no-async-output", e.async_output,
                "Build each step's outputs after its GPU work, instead of while the next step runs");
}

void add_generate_commands(CLI::App& app) {
  auto opts = std::make_shared<GenerateOptions>();
  opts->params.max_tokens = 128;
  opts->engine.device = "auto";
  CLI::App* gen = app.add_subcommand("generate", "One-shot offline generation from a prompt (no Redis)");
  add_engine_flags(gen, opts->engine);
  auto* prompt = gen->add_option("--prompt", opts->prompt, "Prompt text");
  auto* ids = gen->add_option("--prompt-ids", opts->prompt_ids, "Prompt as a JSON array of token ids");
  prompt->excludes(ids);
  gen->add_flag("--chat", opts->chat, "Render the prompt as a user message with the model's chat template");
  add_sampling_flags(gen, opts->params);
  gen->add_flag("--json", opts->json, "Print one JSON object (ids, text, usage, timings)");
  set_action(gen, [opts, gen] {
    if (gen->count("--prompt") + gen->count("--prompt-ids") == 0)
      throw CLI::RequiredError("--prompt or --prompt-ids");
    return run_generate(*opts);
  });

  struct ImportOptions {
    std::string model, tokenizer, out;
  };
  auto imp = std::make_shared<ImportOptions>();
  CLI::App* cmd = app.add_subcommand("import-llama2c", "Convert a llama2.c checkpoint and tokenizer to a Hugging Face model directory");
  cmd->add_option("MODEL.bin", imp->model, "llama2.c checkpoint")->required()->check(CLI::ExistingFile);
  cmd->add_option("TOKENIZER.bin", imp->tokenizer, "llama2.c tokenizer")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", imp->out, "Output directory")->required();
  set_action(cmd, [imp] {
    const Llama2cImportStats s = import_llama2c(imp->model, imp->tokenizer, imp->out);
    std::printf("wrote %s: LlamaForCausalLM dim %d, hidden %d, %d layers, %d heads (%d KV), vocab %d, context %d\n",
                imp->out.c_str(), s.dim, s.hidden_dim, s.layers, s.heads, s.kv_heads, s.vocab, s.seq_len);
    return 0;
  });
}

}  // namespace awqd::cli
