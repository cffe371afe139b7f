#include "engine/llama2c.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/checkpoint_writer.h"

namespace awqd {

namespace {

using nlohmann::json;

std::vector<char> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error(p.string() + ": cannot open");
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

const std::string kSpm = "\xE2\x96\x81";  // U+2581, SentencePiece's word-boundary mark

std::string to_spm(std::string piece) {
  std::string out;
  for (char c : piece) {
    if (c == ' ') out += kSpm;
    else out += c;
  }
  return out;
}

json write_tokenizer_json(const std::filesystem::path& tokenizer_bin, int vocab_size) {
  const std::vector<char> buf = read_file(tokenizer_bin);
  std::size_t off = 0;
  auto need = [&](std::size_t n) {
    if (off + n > buf.size())
      throw std::runtime_error(tokenizer_bin.string() + ": truncated tokenizer (expected " +
                               std::to_string(vocab_size) + " tokens)");
  };
  need(4);
  off += 4;  // max_token_length
  std::vector<std::string> pieces(vocab_size);
  std::vector<float> scores(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    need(8);
    std::int32_t len;
    std::memcpy(&scores[i], buf.data() + off, 4);
    std::memcpy(&len, buf.data() + off + 4, 4);
    off += 8;
    if (len < 0 || len > 1024) throw std::runtime_error(tokenizer_bin.string() + ": corrupt token length");
    need(static_cast<std::size_t>(len));
    pieces[i].assign(buf.data() + off, static_cast<std::size_t>(len));
    off += static_cast<std::size_t>(len);
  }
  // llama2.c stores BOS/EOS as "\n<s>\n" / "\n</s>\n" and pieces with spaces instead of U+2581.
  pieces[0] = "<unk>";
  pieces[1] = "<s>";
  pieces[2] = "</s>";
  std::map<std::string, int> vocab;
  for (int i = 0; i < vocab_size; ++i) {
    if (i >= 3) pieces[i] = to_spm(pieces[i]);
    vocab.emplace(pieces[i], i);
  }
  struct Merge {
    int left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (int i = 3; i < vocab_size; ++i) {
    const std::string& p = pieces[i];
    std::vector<Merge> local;
    for (std::size_t cut = 1; cut < p.size(); ++cut) {
      const auto l = vocab.find(p.substr(0, cut)), r = vocab.find(p.substr(cut));
      if (l != vocab.end() && r != vocab.end() && l->second >= 3 && r->second >= 3)
        local.push_back({l->second, r->second, scores[i]});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });

  json vocab_json = json::object();
  for (int i = 0; i < vocab_size; ++i) vocab_json[pieces[i]] = i;
  json merges_json = json::array();
  for (const auto& m : merges) merges_json.push_back(pieces[m.left] + " " + pieces[m.right]);
  auto special = [](int id, const char* content) {
    return json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpm}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpm}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                          {"pair", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                    {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", kSpm}}}, {"content", " "}},
                                                      {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab_json}, {"merges", merges_json}}},
  };
  return tok;
}

}  // namespace

Llama2cImportStats import_llama2c(const std::filesystem::path& model_bin, const std::filesystem::path& tokenizer_bin,
                                  const std::filesystem::path& out_dir) {
  const std::vector<char> buf = read_file(model_bin);
  const std::string where = model_bin.string();
  if (buf.size() < 28) throw std::runtime_error(where + ": too small for a llama2.c header");
  std::int32_t h[7];
  std::memcpy(h, buf.data(), sizeof h);
  Llama2cImportStats s;
  s.dim = h[0];
  s.hidden_dim = h[1];
  s.layers = h[2];
  s.heads = h[3];
  s.kv_heads = h[4];
  s.shared_classifier = h[5] > 0;
  s.vocab = h[5] > 0 ? h[5] : -h[5];
  s.seq_len = h[6];
  for (int v : {s.dim, s.hidden_dim, s.layers, s.heads, s.kv_heads, s.vocab, s.seq_len})
    if (v <= 0 || v > (1 << 20)) throw std::runtime_error(where + ": not a llama2.c checkpoint (bad header)");
  if (s.dim % s.heads != 0 || s.heads % s.kv_heads != 0 || (s.dim / s.heads) % 2 != 0)
    throw std::runtime_error(where + ": inconsistent header (dim, heads, kv_heads)");
  const std::int64_t D = s.dim, F = s.hidden_dim, L = s.layers, V = s.vocab;
  const std::int64_t hd = D / s.heads, kv = hd * s.kv_heads;
  const std::int64_t floats = V * D + L * D + L * D * D + 2 * L * kv * D + L * D * D + L * D + 3 * L * F * D + D +
                              s.seq_len * hd + (s.shared_classifier ? 0 : V * D);
  const auto have = static_cast<std::int64_t>((buf.size() - 28) / 4);
  if (have < floats)
    throw std::runtime_error(where + ": truncated: the header describes " + std::to_string(floats * 4 + 28) +
                             " bytes, the file has " + std::to_string(buf.size()));
  const float* p = reinterpret_cast<const float*>(buf.data() + 28);
  auto take = [&](std::int64_t n) {
    std::vector<float> v(p, p + n);
    p += n;
    return v;
  };
  // Interleaved-pair rows (2i + r) of each head go to half-rotation rows (r * hd/2 + i).
  auto permute_rows = [&](const std::vector<float>& w, int heads) {
    std::vector<float> out(w.size());
    for (int h2 = 0; h2 < heads; ++h2)
      for (std::int64_t i = 0; i < hd / 2; ++i)
        for (int r = 0; r < 2; ++r) {
          const std::int64_t src = h2 * hd + 2 * i + r, dst = h2 * hd + r * (hd / 2) + i;
          std::copy(&w[src * D], &w[src * D] + D, &out[dst * D]);
        }
    return out;
  };
  CheckpointWriter w;
  w.add_f32("model.embed_tokens.weight", {V, D}, take(V * D));
  std::vector<std::vector<float>> rms_att(L), wq(L), wk(L), wv(L), wo(L), rms_ffn(L), w1(L), w2(L), w3(L);
  for (auto& x : rms_att) x = take(D);
  for (auto& x : wq) x = permute_rows(take(D * D), s.heads);
  for (auto& x : wk) x = permute_rows(take(kv * D), s.kv_heads);
  for (auto& x : wv) x = take(kv * D);
  for (auto& x : wo) x = take(D * D);
  for (auto& x : rms_ffn) x = take(D);
  for (auto& x : w1) x = take(F * D);
  for (auto& x : w2) x = take(D * F);
  for (auto& x : w3) x = take(F * D);
  w.add_f32("model.norm.weight", {D}, take(D));
  p += s.seq_len * hd;  // the two RoPE tables (seq_len, hd / 2) each: recomputed by the engine
  if (!s.shared_classifier) w.add_f32("lm_head.weight", {V, D}, take(V * D));
  for (std::int64_t i = 0; i < L; ++i) {
    const std::string pre = "model.layers." + std::to_string(i) + ".";
    w.add_f32(pre + "input_layernorm.weight", {D}, rms_att[i]);
    w.add_f32(pre + "self_attn.q_proj.weight", {D, D}, wq[i]);
    w.add_f32(pre + "self_attn.k_proj.weight", {kv, D}, wk[i]);
    w.add_f32(pre + "self_attn.v_proj.weight", {kv, D}, wv[i]);
    w.add_f32(pre + "self_attn.o_proj.weight", {D, D}, wo[i]);
    w.add_f32(pre + "post_attention_layernorm.weight", {D}, rms_ffn[i]);
    w.add_f32(pre + "mlp.gate_proj.weight", {F, D}, w1[i]);
    w.add_f32(pre + "mlp.down_proj.weight", {D, F}, w2[i]);
    w.add_f32(pre + "mlp.up_proj.weight", {F, D}, w3[i]);
  }
  std::filesystem::create_directories(out_dir);
  w.write(out_dir);
  const json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", D},
      {"intermediate_size", F}, {"num_hidden_layers", L}, {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads}, {"head_dim", hd}, {"vocab_size", V},
      {"max_position_embeddings", s.seq_len}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
      {"tie_word_embeddings", s.shared_classifier}, {"hidden_act", "silu"}, {"bos_token_id", 1},
      {"eos_token_id", 2}, {"torch_dtype", "float32"}};
  std::ofstream(out_dir / "config.json") << config.dump(2) << "\n";
  std::ofstream(out_dir / "tokenizer.json") << write_tokenizer_json(tokenizer_bin, s.vocab).dump() << "\n";
  const json tok_config = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<s>"},
                           {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"tokenizer_class", "LlamaTokenizer"},
                           {"clean_up_tokenization_spaces", false}, {"legacy", true}};
  std::ofstream(out_dir / "tokenizer_config.json") << tok_config.dump(2) << "\n";
  std::ofstream out(out_dir / "generation_config.json");
  out << json{{"bos_token_id", 1}, {"eos_token_id", 2}}.dump(2) << "\n";
  if (!out) throw std::runtime_error(out_dir.string() + ": write failed");
  return s;
}

}  // namespace awqd
