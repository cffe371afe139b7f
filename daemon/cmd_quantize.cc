// `awqd quantize` (SPEC section 6): an unquantized Hugging Face model in, a standard AWQ GEMM
// checkpoint out (engine/quantize.h has the algorithm). On the CPU, in fp32.
//
//   awqd quantize --model DIR --out DIR [--calib FILE] [--samples 128] [--seq-len 512]
//                 [--group-size 128] [--method awq|rtn] [--no-duo-scaling] [--no-scale-search]
//                 [--no-clip]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "daemon/cli.h"
#include "engine/checkpoint_writer.h"
#include "engine/model_weights.h"
#include "engine/quantize.h"
#include "engine/text_corpus.h"
#include "engine/text_file.h"
#include "engine/tokenizer.h"

namespace awqd::cli {
namespace {

namespace fs = std::filesystem;

struct QuantizeArgs {
  std::string model, out, calib, method = "awq";
  int samples = 128, seq_len = 512, group_size = 128;
  bool no_duo_scaling = false, no_scale_search = false, no_clip = false;
};

// Real releases shard at about 5 GB; smaller checkpoints are one model.safetensors.
constexpr std::size_t kShardBytes = 5'000'000'000;

// The files of a model directory that are not weights or config.json, copied as they are.
void copy_side_files(const fs::path& from, const fs::path& to) {
  for (const char* name :
       {"tokenizer.json", "tokenizer.json.xz", "tokenizer_config.json", "tokenizer.model",
        "special_tokens_map.json", "generation_config.json"}) {
    if (!fs::exists(from / name)) continue;
    fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing);
    fs::permissions(to / name, fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::add);
  }
}

int run(const QuantizeArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  QuantizeOptions o;
  o.method = a.method == "rtn" ? QuantMethod::kRtn : QuantMethod::kAwq;
  o.group_size = a.group_size;
  o.duo_scaling = !a.no_duo_scaling;
  if (a.no_scale_search) o.scale_grid = 0;
  if (a.no_clip) o.clip_max_shrink = 0.0f;
  require_no_checkpoint(a.out);
  const auto weights = ModelWeights::load(a.model);

  std::vector<std::vector<std::int32_t>> samples;
  if (o.method == QuantMethod::kAwq) {
    if (a.calib.empty())
      throw std::invalid_argument("--method awq needs calibration text: --calib FILE");
    const Tokenizer tok = Tokenizer::load(a.model);
    const auto ids = tokenize_paragraphs(tok, read_file(a.calib));
    samples = cut_samples(ids, a.samples, a.seq_len);
    if (samples.empty())
      throw std::invalid_argument(a.calib + " has " + std::to_string(ids.size()) +
                                  " tokens, fewer than one sample of " + std::to_string(a.seq_len));
    std::fprintf(
        stderr, "calibration: %zu samples of %d tokens from %s (%zu tokens in the file)%s\n",
        samples.size(), a.seq_len, a.calib.c_str(), ids.size(),
        static_cast<int>(samples.size()) < a.samples ? " - the text is shorter than --samples asks"
                                                     : "");
  }

  CheckpointWriter writer;
  quantize_model(*weights, samples, o, writer, [](const QuantizeProgress& p) {
    std::fprintf(stderr, "layer %d of %d  elapsed %.1f s  ETA %.1f s%s%s\n", p.layer, p.num_layers,
                 p.elapsed_s, p.eta_s, p.detail.empty() ? "" : "  ", p.detail.c_str());
  });

  const fs::path out = a.out;
  fs::create_directories(out);
  writer.write(out, writer.total_bytes() > kShardBytes ? kShardBytes : 0);
  nlohmann::json config;
  std::ifstream(fs::path(a.model) / "config.json") >> config;
  std::ofstream(out / "config.json") << quantized_config(config, o.group_size).dump(2) << "\n";
  copy_side_files(a.model, out);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s: %s w4 g%d, %.1f MB, in %.1f s\n", out.c_str(), a.method.c_str(),
              o.group_size, static_cast<double>(writer.total_bytes()) / 1e6, secs);
  return 0;
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* sub = app.add_subcommand(
      "quantize", "Quantize an fp16/bf16 model to a 4-bit AWQ GEMM checkpoint (CPU)");
  sub->add_option("--model", a->model, "Unquantized model directory")->required()->type_name("DIR");
  sub->add_option("--out", a->out, "Output directory")->required()->type_name("DIR");
  sub->add_option("--calib", a->calib,
                  "Calibration text (paragraphs separated by blank lines; .xz read too)")
      ->type_name("FILE");
  sub->add_option("--samples", a->samples, "Calibration samples")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--seq-len", a->seq_len, "Tokens per calibration sample")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--group-size", a->group_size, "Quantization group size G")
      ->capture_default_str()
      ->check(CLI::IsMember({32, 64, 128}));
  sub->add_option("--method", a->method,
                  "awq (scale and clip search) or rtn (round to nearest, the baseline)")
      ->capture_default_str()
      ->check(CLI::IsMember({"awq", "rtn"}));
  sub->add_flag("--no-duo-scaling", a->no_duo_scaling,
                "Scale search with s = x_mean^a alone (not / w_mean^(1-a))");
  sub->add_flag("--no-scale-search", a->no_scale_search,
                "AWQ without the scale search (clip search only; ablation)");
  sub->add_flag("--no-clip", a->no_clip,
                "AWQ without the clip search (scale search only; ablation)");
  set_action(sub, [a] { return run(*a); });
}

}  // namespace awqd::cli
