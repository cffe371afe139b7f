// Import of a llama2.c checkpoint (Karpathy's legacy format) and its tokenizer as a standard
// Hugging Face model directory, so such models run through the same loader and engine.
//
// model.bin: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
// vocab_size < 0 means an unshared classifier), then fp32 tensors: token embeddings (vocab, dim),
// rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim), wv (L, kv_dim, dim), wo (L, dim, dim),
// rms_ffn (L, dim), w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim),
// two RoPE tables (seq_len, head_size / 2) each, then the classifier (vocab, dim) when unshared.
// llama2.c rotates interleaved pairs (2i, 2i+1); HF rotates halves (i, i + hd/2), so the rows
// of wq and wk are permuted within each head (the permutation HF's own Llama converter applies).
//
// tokenizer.bin: int32 max_token_length, then per token: float score, int32 length, bytes.
// Ids 0..2 are <unk>, <s>, </s>; 3..258 the byte tokens <0x00>..<0xFF>. It becomes a
// SentencePiece-style BPE tokenizer.json with byte fallback; merges are derived from the scores
// (every split of a piece into two pieces, ranked by the merged piece's score).
#pragma once

#include <filesystem>

namespace awqd {

struct Llama2cImportStats {
  int dim = 0, hidden_dim = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, seq_len = 0;
  bool shared_classifier = true;
};

// Throws std::runtime_error naming the file and what is wrong (size mismatch, bad header).
Llama2cImportStats import_llama2c(const std::filesystem::path& model_bin,
                                  const std::filesystem::path& tokenizer_bin,
                                  const std::filesystem::path& out_dir);

}  // namespace awqd
