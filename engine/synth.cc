#include "engine/synth.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/checkpoint_writer.h"
#include "engine/fp16.h"
#include "engine/thread_pool.h"

namespace awqd {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

enum class Family { kLlama3, kQwen2, kMistral };

struct Preset {
  const char* name;
  Family family;
  const char* arch;
  const char* model_type;
  int hidden, intermediate, layers, heads, kv_heads, vocab, max_pos;
  double rms_eps, rope_theta;
  bool tied, llama31_rope;
};

// From the models' own config.json files.
constexpr Preset kPresets[] = {
    {"llama3-8b", Family::kLlama3, "LlamaForCausalLM", "llama", 4096, 14336, 32, 32, 8, 128256,
     8192, 1e-5, 500000.0, false, false},
    {"llama3.1-8b", Family::kLlama3, "LlamaForCausalLM", "llama", 4096, 14336, 32, 32, 8, 128256,
     131072, 1e-5, 500000.0, false, true},
    {"llama3-70b", Family::kLlama3, "LlamaForCausalLM", "llama", 8192, 28672, 80, 64, 8, 128256,
     8192, 1e-5, 500000.0, false, false},
    {"qwen2.5-7b", Family::kQwen2, "Qwen2ForCausalLM", "qwen2", 3584, 18944, 28, 28, 4, 152064,
     32768, 1e-6, 1000000.0, false, false},
    {"qwen2.5-14b", Family::kQwen2, "Qwen2ForCausalLM", "qwen2", 5120, 13824, 48, 40, 8, 152064,
     32768, 1e-5, 1000000.0, false, false},
    {"qwen2.5-32b", Family::kQwen2, "Qwen2ForCausalLM", "qwen2", 5120, 27648, 64, 40, 8, 152064,
     32768, 1e-5, 1000000.0, false, false},
    {"mistral-7b", Family::kMistral, "MistralForCausalLM", "mistral", 4096, 14336, 32, 32, 8, 32000,
     32768, 1e-5, 1000000.0, false, false},
    {"tiny", Family::kLlama3, "LlamaForCausalLM", "llama", 256, 768, 4, 4, 2, 1024, 2048, 1e-5,
     500000.0, true, false},
};

constexpr int kGroupSize = 128;

const Preset& find_preset(const std::string& name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return p;
  std::string known;
  for (const Preset& p : kPresets) known += std::string(known.empty() ? "" : ", ") + p.name;
  throw std::invalid_argument("unknown model \"" + name + "\" (known: " + known + ")");
}

// Special tokens of each family, with their ids.
std::vector<std::pair<int, std::string>> special_tokens(Family f, int vocab) {
  std::vector<std::pair<int, std::string>> out;
  switch (f) {
    case Family::kLlama3: {
      const int base = vocab - 256;  // 128000 in the real models
      int reserved = 0;
      for (int i = 0; i < 256; ++i) {
        std::string t;
        if (i == 0)
          t = "<|begin_of_text|>";
        else if (i == 1)
          t = "<|end_of_text|>";
        else if (i == 6)
          t = "<|start_header_id|>";
        else if (i == 7)
          t = "<|end_header_id|>";
        else if (i == 9)
          t = "<|eot_id|>";
        else
          t = "<|reserved_special_token_" + std::to_string(reserved++) + "|>";
        out.emplace_back(base + i, t);
      }
      break;
    }
    case Family::kQwen2: {
      const char* names[] = {
          "<|endoftext|>",      "<|im_start|>",     "<|im_end|>",     "<|object_ref_start|>",
          "<|object_ref_end|>", "<|box_start|>",    "<|box_end|>",    "<|quad_start|>",
          "<|quad_end|>",       "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
          "<|image_pad|>",      "<|video_pad|>",    "<tool_call>",    "</tool_call>",
          "<|fim_prefix|>",     "<|fim_middle|>",   "<|fim_suffix|>", "<|fim_pad|>",
          "<|repo_name|>",      "<|file_sep|>"};
      for (int i = 0; i < 22; ++i) out.emplace_back(151643 + i, names[i]);
      break;
    }
    case Family::kMistral:
      out = {{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}};
      break;
  }
  return out;
}

// GPT-2's map of bytes to printable code points, as UTF-8 strings, in its vocabulary order
// (printable bytes first).
std::vector<std::string> byte_tokens() {
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  std::vector<std::string> out;
  for (int cp : cs) out.push_back(utf8(cp));
  return out;
}

const char* chat_template(Family f) {
  switch (f) {
    case Family::kLlama3:
      return "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
             "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
             "message['content'] | trim + "
             "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
             "endif %}{{ content }}"
             "{% endfor %}{% if add_generation_prompt %}{{ "
             "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    case Family::kQwen2:
      return "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
             "message['content'] + "
             "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
             "'<|im_start|>assistant\n' }}{% endif %}";
    case Family::kMistral:
      return "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ "
             "'[INST] ' + "
             "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% "
             "endif %}{% endfor %}";
  }
  return "";
}

// A byte-level BPE tokenizer.json + tokenizer_config.json with `vocab` ids in all.
void write_byte_level_tokenizer(const fs::path& dir, Family f, int vocab) {
  const auto specials = special_tokens(f, vocab);
  std::map<int, std::string> special_at;
  for (const auto& [id, t] : specials) special_at[id] = t;
  // Regular ids: every id below the first special of the upper block that is not a special.
  const int regular_end = f == Family::kMistral ? vocab : specials.front().first;
  json vocab_json = json::object();
  std::vector<std::string> merges;
  std::map<std::string, bool> seen;
  int next = 0;
  auto take_id = [&] {
    while (special_at.count(next)) {
      vocab_json[special_at[next]] = next;
      ++next;
    }
    return next++;
  };
  for (const std::string& b : byte_tokens()) {
    vocab_json[b] = take_id();
    seen[b] = true;
  }
  // Merges: a frequent-character alphabet combined level by level ("Ġt", "Ġth", ...).
  std::vector<std::string> alphabet = {"\xC4\xA0"};  // Ġ, the space byte
  for (char c : std::string("etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'-"))
    alphabet.emplace_back(1, c);
  std::vector<std::string> level = alphabet;
  while (next < regular_end) {
    std::vector<std::string> next_level;
    for (const std::string& a : level) {
      for (const std::string& c : alphabet) {
        if (next >= regular_end) break;
        const std::string t = a + c;
        if (seen.count(t)) continue;
        seen[t] = true;
        const int id = take_id();
        if (id >= regular_end) break;
        vocab_json[t] = id;
        merges.push_back(a + " " + c);
        next_level.push_back(t);
      }
      if (next >= regular_end) break;
    }
    level = std::move(next_level);
  }
  json added = json::array();
  for (const auto& [id, t] : specials)
    added.push_back({{"id", id},
                     {"content", t},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const char* regex = f == Family::kQwen2
                          ? "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                            "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
                          : "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
                            "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}};
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", f == Family::kQwen2 ? json{{"type", "NFC"}} : json(nullptr)},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", regex}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          byte_level}}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", f == Family::kLlama3},
        {"vocab", vocab_json},
        {"merges", merges}}},
  };
  std::ofstream(dir / "tokenizer.json") << tok.dump() << "\n";
  json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
              {"clean_up_tokenization_spaces", false},
              {"model_max_length", 131072},
              {"chat_template", chat_template(f)}};
  switch (f) {
    case Family::kLlama3:
      cfg.update({{"add_bos_token", true},
                  {"bos_token", "<|begin_of_text|>"},
                  {"eos_token", "<|eot_id|>"}});
      break;
    case Family::kQwen2:
      cfg.update({{"add_bos_token", false},
                  {"bos_token", nullptr},
                  {"eos_token", "<|im_end|>"},
                  {"pad_token", "<|endoftext|>"}});
      break;
    case Family::kMistral:
      cfg.update({{"add_bos_token", true},
                  {"bos_token", "<s>"},
                  {"eos_token", "</s>"},
                  {"unk_token", "<unk>"}});
      break;
  }
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump(2) << "\n";
}

// Counter-based random numbers (splitmix64's finalizer): value i of a stream depends only on the
// seed, the tensor's name and i, so the tensors are the same whatever the thread count.
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t stream_key(std::uint64_t seed, const std::string& name) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return mix(seed ^ h);
}

// Approximately standard normal (sum of four 16-bit uniforms, scaled to unit variance).
inline float normal_from(std::uint64_t r) {
  float s = 0;
  for (int i = 0; i < 4; ++i) s += static_cast<float>((r >> (16 * i)) & 0xFFFF) / 65535.0f;
  return (s - 2.0f) * 1.7320508f;
}

// Fills count elements of type T with f(random 64 bits, index), in parallel.
template <typename T, typename F>
void fill_parallel(std::byte* dst, std::size_t count, std::uint64_t key, F f) {
  T* out = reinterpret_cast<T*>(dst);
  ThreadPool::global().parallel_for(
      static_cast<std::int64_t>(count),
      [&](std::int64_t i0, std::int64_t i1) {
        for (std::int64_t i = i0; i < i1; ++i)
          out[i] = f(mix(key + static_cast<std::uint64_t>(i)), static_cast<std::size_t>(i));
      },
      65536);
}

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

}  // namespace

std::vector<std::string> synth_model_names() {
  std::vector<std::string> out;
  for (const Preset& p : kPresets) out.emplace_back(p.name);
  return out;
}

json synth_config(const std::string& name) {
  const Preset& p = find_preset(name);
  const auto specials = special_tokens(p.family, p.vocab);
  json c = {
      {"architectures", {p.arch}},
      {"model_type", p.model_type},
      {"hidden_size", p.hidden},
      {"intermediate_size", p.intermediate},
      {"num_hidden_layers", p.layers},
      {"num_attention_heads", p.heads},
      {"num_key_value_heads", p.kv_heads},
      {"head_dim", p.hidden / p.heads},
      {"hidden_act", "silu"},
      {"max_position_embeddings", p.max_pos},
      {"rms_norm_eps", p.rms_eps},
      {"rope_theta", p.rope_theta},
      {"tie_word_embeddings", p.tied},
      {"vocab_size", p.vocab},
      {"attention_dropout", 0.0},
      {"initializer_range", 0.02},
      {"use_cache", true},
      {"torch_dtype", "float16"},
      {"quantization_config",
       {{"quant_method", "awq"},
        {"bits", 4},
        {"group_size", kGroupSize},
        {"zero_point", true},
        {"version", "gemm"},
        {"modules_to_not_convert", nullptr}}},
  };
  switch (p.family) {
    case Family::kLlama3:
      c["bos_token_id"] = specials[0].first;                       // <|begin_of_text|>
      c["eos_token_id"] = {specials[1].first, specials[9].first};  // <|end_of_text|>, <|eot_id|>
      c["attention_bias"] = false;
      c["mlp_bias"] = false;
      c["rope_scaling"] = p.llama31_rope ? json{{"rope_type", "llama3"},
                                                {"factor", 8.0},
                                                {"low_freq_factor", 1.0},
                                                {"high_freq_factor", 4.0},
                                                {"original_max_position_embeddings", 8192}}
                                         : json(nullptr);
      break;
    case Family::kQwen2:
      c["bos_token_id"] = 151643;
      c["eos_token_id"] = 151645;
      c["sliding_window"] = 131072;
      c["use_sliding_window"] = false;
      c["max_window_layers"] = p.layers;
      break;
    case Family::kMistral:
      c["bos_token_id"] = 1;
      c["eos_token_id"] = 2;
      c["sliding_window"] = nullptr;
      break;
  }
  return c;
}

void write_synth_tokenizer(const fs::path& dir, const std::string& name) {
  const Preset& p = find_preset(name);
  fs::create_directories(dir);
  write_byte_level_tokenizer(dir, p.family, p.vocab);
}

SynthResult synth_model(const SynthOptions& o,
                        const std::function<void(std::size_t, std::size_t)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  const Preset& p = find_preset(o.like);
  const json config = synth_config(o.like);
  const std::int64_t D = p.hidden, I = p.intermediate, V = p.vocab, hd = p.hidden / p.heads;
  const std::int64_t qn = p.heads * hd, kvn = p.kv_heads * hd, G = kGroupSize;
  const bool bias = p.family == Family::kQwen2;

  std::vector<TensorSource> tensors;
  auto add = [&](const std::string& name, DType dtype, std::vector<std::int64_t> shape,
                 std::function<void(std::byte*, std::size_t, std::uint64_t)> gen) {
    TensorSource t{name, dtype, std::move(shape), {}};
    const std::uint64_t key = stream_key(o.seed, name);
    std::size_t count = 1;
    for (auto d : t.shape) count *= static_cast<std::size_t>(d);
    t.fill = [gen, count, key](std::byte* dst) { gen(dst, count, key); };
    tensors.push_back(std::move(t));
  };
  auto normal_f16 = [](float mean, float stddev) {
    return [mean, stddev](std::byte* dst, std::size_t n, std::uint64_t key) {
      fill_parallel<half_bits>(dst, n, key, [=](std::uint64_t r, std::size_t) {
        return float_to_half(mean + stddev * normal_from(r));
      });
    };
  };
  auto linear = [&](const std::string& name, std::int64_t K, std::int64_t N, bool with_bias) {
    // Any 32 random bits are eight uniform nibbles; zeros are 7 + one random bit per nibble.
    add(name + ".qweight", DType::kI32, {K, N / 8},
        [](std::byte* dst, std::size_t n, std::uint64_t key) {
          fill_parallel<std::uint32_t>(dst, n, key, [](std::uint64_t r, std::size_t) {
            return static_cast<std::uint32_t>(r);
          });
        });
    add(name + ".qzeros", DType::kI32, {K / G, N / 8},
        [](std::byte* dst, std::size_t n, std::uint64_t key) {
          fill_parallel<std::uint32_t>(dst, n, key, [](std::uint64_t r, std::size_t) {
            return 0x77777777u + (static_cast<std::uint32_t>(r) & 0x11111111u);
          });
        });
    const float s = 1.0f / (4.64f * std::sqrt(static_cast<float>(K)));
    add(name + ".scales", DType::kF16, {K / G, N},
        [s](std::byte* dst, std::size_t n, std::uint64_t key) {
          fill_parallel<half_bits>(dst, n, key, [s](std::uint64_t r, std::size_t) {
            const float u = static_cast<float>(r >> 40) / static_cast<float>(1 << 24);  // [0, 1)
            return float_to_half(s * (0.8f + 0.4f * u));
          });
        });
    if (with_bias) add(name + ".bias", DType::kF16, {N}, normal_f16(0.0f, 0.1f));
  };

  const float embed_std = 1.0f / std::sqrt(static_cast<float>(D));
  add("model.embed_tokens.weight", DType::kF16, {V, D}, normal_f16(0.0f, embed_std));
  for (int i = 0; i < p.layers; ++i) {
    const std::string pre = "model.layers." + std::to_string(i) + ".";
    linear(pre + "self_attn.q_proj", D, qn, bias);
    linear(pre + "self_attn.k_proj", D, kvn, bias);
    linear(pre + "self_attn.v_proj", D, kvn, bias);
    linear(pre + "self_attn.o_proj", qn, D, false);
    linear(pre + "mlp.gate_proj", D, I, false);
    linear(pre + "mlp.up_proj", D, I, false);
    linear(pre + "mlp.down_proj", I, D, false);
    add(pre + "input_layernorm.weight", DType::kF16, {D}, normal_f16(1.0f, 0.05f));
    add(pre + "post_attention_layernorm.weight", DType::kF16, {D}, normal_f16(1.0f, 0.05f));
  }
  add("model.norm.weight", DType::kF16, {D}, normal_f16(1.0f, 0.05f));
  if (!p.tied) add("lm_head.weight", DType::kF16, {V, D}, normal_f16(0.0f, embed_std));

  SynthResult result;
  for (const auto& t : tensors) result.weight_bytes += t.nbytes();
  std::size_t done = 0;
  if (progress) {
    for (auto& t : tensors) {
      t.fill = [fill = t.fill, n = t.nbytes(), &done, total = result.weight_bytes,
                &progress](std::byte* dst) {
        fill(dst);
        progress(done += n, total);
      };
    }
  }
  require_no_checkpoint(o.out);
  fs::create_directories(o.out);
  const std::size_t shard = result.weight_bytes > o.max_shard_bytes ? o.max_shard_bytes : 0;
  result.shards = write_checkpoint(o.out, tensors, shard);
  write_json(o.out / "config.json", config);
  json gen = {{"bos_token_id", config["bos_token_id"]},
              {"eos_token_id", config["eos_token_id"]},
              {"do_sample", false}};
  write_json(o.out / "generation_config.json", gen);
  if (!o.tokenizer_dir.empty()) {
    bool any = false;
    for (const char* name : {"tokenizer.json", "tokenizer.json.xz", "tokenizer_config.json",
                             "special_tokens_map.json"})
      if (fs::exists(o.tokenizer_dir / name)) {
        fs::copy_file(o.tokenizer_dir / name, o.out / name, fs::copy_options::overwrite_existing);
        fs::permissions(o.out / name, fs::perms::owner_read | fs::perms::owner_write,
                        fs::perm_options::add);
        any = true;
      }
    if (!any)
      throw std::runtime_error(o.tokenizer_dir.string() + ": no tokenizer.json(.xz) to copy");
  } else {
    write_synth_tokenizer(o.out, o.like);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace awqd
