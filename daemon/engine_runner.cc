#include "daemon/engine_runner.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "engine/executor_factory.h"

namespace awqd {
namespace {

class EngineRunner final : public Runner {
 public:
  EngineRunner(const DaemonConfig& c, int replica) {
    EngineConfig ec;
    ec.model_dir = c.model;
    ec.device = resolve_device(c.device);
    ec.gpus = c.engine_gpu_groups().at(static_cast<std::size_t>(replica));
    ec.tensor_parallel = static_cast<int>(ec.gpus.size());
    ec.gpu_memory_utilization = static_cast<float>(c.gpu_memory_utilization);
    ec.cpu_kv_cache_bytes = static_cast<std::int64_t>(c.cpu_kv_cache_mb) << 20;
    ec.cpu_threads = c.cpu_threads;
    ec.max_num_seqs = c.max_num_seqs;
    ec.max_num_batched_tokens = c.max_num_batched_tokens;
    ec.enable_prefix_caching = c.prefix_caching;
    ec.cuda_graphs = c.cuda_graphs;
    ec.deterministic = c.deterministic;
    ec.async_output = c.async_output;
    ec.fused_decode_mlp = c.fused_decode_mlp;
    ec.fold_norms = c.fold_norms;
    ec.fp16_weight_cache = c.fp16_weight_cache;
    engine_ = std::make_unique<Engine>(ec);
    chat_format_ = detect_chat_format(engine_->tokenizer());

    const std::filesystem::path dir(c.model);
    info_.model = std::filesystem::weakly_canonical(dir).filename().string();
    info_.model_hash = model_fingerprint(dir);
    info_.describe = engine_->describe();
    info_.limits.vocab_size = engine_->model_config().vocab_size;
    info_.limits.max_context = engine_->model_config().max_position_embeddings;
    info_.max_num_seqs = c.max_num_seqs;
    info_.devices = engine_->devices();
  }

  RunnerInfo info() const override { return info_; }

  void add(const std::string& id, const Job& job, std::uint64_t seed) override {
    const Tokenizer& tok = engine_->tokenizer();
    GenerationRequest req;
    req.id = id;
    req.params = job.params;
    req.params.seed = seed;
    req.priority = job.priority;
    switch (job.prompt_kind) {
      case PromptKind::kText:
        req.prompt_ids = tok.encode(job.prompt, /*add_special_tokens=*/true);
        break;
      case PromptKind::kMessages:
        req.prompt_ids = tok.encode(render_chat(chat_format_, job.messages, tok),
                                    /*add_special_tokens=*/chat_format_ == ChatFormat::kPlain);
        break;
      case PromptKind::kTokenIds:
        req.prompt_ids = job.prompt_token_ids;
        break;
    }
    const int context = info_.limits.max_context;
    if (static_cast<int>(req.prompt_ids.size()) >= context) {
      throw JobRejected(errc::kPromptTooLong,
                        "the prompt is " + std::to_string(req.prompt_ids.size()) +
                            " tokens; the model's context is " + std::to_string(context) +
                            " tokens and at least one must be left to generate");
    }
    try {
      engine_->add_request(std::move(req));
    } catch (const std::invalid_argument& e) {
      throw JobRejected(errc::kInvalidRequest, e.what());
    }
  }

  void cancel(const std::string& id) override { engine_->cancel(id); }
  std::vector<RequestOutput> step() override { return engine_->step(); }
  bool has_unfinished() const override { return engine_->has_unfinished(); }
  EngineStats stats() const override { return engine_->stats(); }
  std::vector<DeviceStatus> devices() const override { return engine_->devices(); }

 private:
  std::unique_ptr<Engine> engine_;
  ChatFormat chat_format_ = ChatFormat::kPlain;
  RunnerInfo info_;
};

struct Fnv1a {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  void add(const std::string& s) { add(s.data(), s.size()); }
};

}  // namespace

RunnerFactory engine_runner_factory(const DaemonConfig& config) {
  return [config](int replica) { return std::make_unique<EngineRunner>(config, replica); };
}

std::string model_fingerprint(const std::filesystem::path& dir) {
  Fnv1a fnv;
  const auto add_file_prefix = [&](const std::filesystem::path& p, std::uint64_t max_bytes) {
    std::ifstream in(p, std::ios::binary);
    std::vector<char> buf(static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, 1 << 20)));
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    fnv.add(buf.data(), static_cast<std::size_t>(in.gcount()));
  };
  add_file_prefix(dir / "config.json", 1 << 20);
  std::vector<std::filesystem::path> shards;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") shards.push_back(e.path());
  }
  std::sort(shards.begin(), shards.end());
  for (const auto& shard : shards) {
    fnv.add(shard.filename().string());
    const std::uint64_t size = std::filesystem::file_size(shard);
    fnv.add(&size, sizeof(size));
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    std::ifstream in(shard, std::ios::binary);
    std::uint64_t header_len = 0;
    in.read(reinterpret_cast<char*>(&header_len), sizeof(header_len));
    add_file_prefix(shard, 8 + std::min<std::uint64_t>(header_len, size));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv.h));
  return hex;
}

}  // namespace awqd
