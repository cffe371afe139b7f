#include "engine/model_weights.h"

#include <stdexcept>

#include "engine/awq.h"

namespace awqd {

namespace {

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

void check_shape(const TensorView& t, const std::vector<std::int64_t>& want) {
  if (t.shape != want)
    throw std::runtime_error(t.file + ": tensor \"" + t.name + "\" has shape " + shape_str(t.shape) +
                             ", expected " + shape_str(want) + " from config.json");
}

void check_dtype(const TensorView& t, DType want) {
  if (t.dtype != want)
    throw std::runtime_error(t.file + ": tensor \"" + t.name + "\" has dtype " + dtype_name(t.dtype) +
                             ", expected " + dtype_name(want));
}

}  // namespace

std::vector<float> LinearWeight::dense_nk() const {
  std::vector<float> out(static_cast<std::size_t>(N) * K);
  if (quantized) {
    const auto w_kn = awq_dequantize(qweight, qzeros, scales, K, N, group_size);
    for (int k = 0; k < K; ++k)
      for (int n = 0; n < N; ++n) out[static_cast<std::size_t>(n) * K + k] = w_kn[static_cast<std::size_t>(k) * N + n];
  } else {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = half_to_float(weight[i]);
  }
  return out;
}

const half_bits* ModelWeights::fp16_tensor(const std::string& name, std::vector<std::int64_t> shape) {
  const TensorView& t = store_->get(name);
  check_shape(t, shape);
  switch (t.dtype) {
    case DType::kF16:
      return t.as<half_bits>();
    case DType::kBF16: {
      auto& buf = converted_.emplace_back(static_cast<std::size_t>(t.numel()));
      const auto* src = t.as<std::uint16_t>();
      for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float_to_half(bf16_to_float(src[i]));
      return buf.data();
    }
    case DType::kF32: {
      auto& buf = converted_.emplace_back(static_cast<std::size_t>(t.numel()));
      const auto* src = t.as<float>();
      for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float_to_half(src[i]);
      return buf.data();
    }
    default:
      throw std::runtime_error(t.file + ": tensor \"" + name + "\" has dtype " + dtype_name(t.dtype) +
                               ", expected F16, BF16 or F32");
  }
}

LinearWeight ModelWeights::linear(const std::string& name, int K, int N, bool bias) {
  LinearWeight w;
  w.name = name;
  w.K = K;
  w.N = N;
  const QuantConfig& q = config_.quant;
  if (q.awq && store_->contains(name + ".qweight")) {
    const int G = q.group_size;
    if (K % G != 0)
      throw std::runtime_error(store_->dir().string() + ": " + name + " has K = " + std::to_string(K) +
                               " inputs, not a multiple of the AWQ group size " + std::to_string(G));
    if (N % 8 != 0)
      throw std::runtime_error(store_->dir().string() + ": " + name + " has N = " + std::to_string(N) +
                               " outputs, not a multiple of 8 (AWQ packs 8 per int32)");
    const TensorView& qw = store_->get(name + ".qweight");
    const TensorView& qz = store_->get(name + ".qzeros");
    check_dtype(qw, DType::kI32);
    check_dtype(qz, DType::kI32);
    check_shape(qw, {K, N / 8});
    check_shape(qz, {K / G, N / 8});
    w.quantized = true;
    w.group_size = G;
    w.qweight = qw.as<std::int32_t>();
    w.qzeros = qz.as<std::int32_t>();
    w.scales = fp16_tensor(name + ".scales", {K / G, N});
  } else {
    if (q.awq && !store_->contains(name + ".weight"))
      throw std::runtime_error(store_->dir().string() + ": missing tensor \"" + name +
                               ".qweight\" (AWQ checkpoint) and no unquantized \"" + name + ".weight\"");
    w.weight = fp16_tensor(name + ".weight", {N, K});
  }
  if (bias) w.bias = fp16_tensor(name + ".bias", {N});
  return w;
}

std::unique_ptr<ModelWeights> ModelWeights::load(const std::filesystem::path& dir) {
  std::unique_ptr<ModelWeights> m(new ModelWeights());
  m->config_ = load_model_config(dir);
  m->store_ = std::make_unique<TensorStore>(dir);
  const ModelConfig& c = m->config_;
  const int D = c.hidden_size, V = c.vocab_size, I = c.intermediate_size, hd = c.head_dim;
  m->embed_ = m->fp16_tensor("model.embed_tokens.weight", {V, D});
  m->final_norm_ = m->fp16_tensor("model.norm.weight", {D});
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    m->lm_head_ = m->fp16_tensor("lm_head.weight", {V, D});
  }
  m->layers_.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights& L = m->layers_[i];
    L.input_norm = m->fp16_tensor(p + "input_layernorm.weight", {D});
    L.post_attn_norm = m->fp16_tensor(p + "post_attention_layernorm.weight", {D});
    if (c.qk_norm) {
      L.q_norm = m->fp16_tensor(p + "self_attn.q_norm.weight", {hd});
      L.k_norm = m->fp16_tensor(p + "self_attn.k_norm.weight", {hd});
    }
    L.q = m->linear(p + "self_attn.q_proj", D, c.q_size(), c.attention_bias);
    L.k = m->linear(p + "self_attn.k_proj", D, c.kv_size(), c.attention_bias);
    L.v = m->linear(p + "self_attn.v_proj", D, c.kv_size(), c.attention_bias);
    L.o = m->linear(p + "self_attn.o_proj", c.q_size(), D, false);
    L.gate = m->linear(p + "mlp.gate_proj", D, I, false);
    L.up = m->linear(p + "mlp.up_proj", D, I, false);
    L.down = m->linear(p + "mlp.down_proj", I, D, false);
  }
  return m;
}

}  // namespace awqd
