#include "engine/cuda_executor.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/cpu_ops.h"
#include "engine/tensor_parallel.h"
#include "kernels/activation.cuh"
#include "kernels/allreduce.cuh"
#include "kernels/attention_decode.cuh"
#include "kernels/attention_prefill.cuh"
#include "kernels/awq_gemm.cuh"
#include "kernels/cublaslt_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/decode_mlp.cuh"
#include "kernels/device.cuh"
#include "kernels/embedding.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "kernels/sampling.cuh"

namespace awqd {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr std::size_t kCublasWorkspace = 32u << 20;

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / kGiB);
  return buf;
}

// Owns one CUDA allocation: device memory (cudaMalloc), or page-locked host memory
// (cudaMallocHost) for the per-step copies. Movable, not copyable.
template <bool kPinnedHost>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  explicit CudaBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    if constexpr (kPinnedHost)
      CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
    else
      CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~CudaBuffer() {
    if (ptr_ == nullptr) return;
    if constexpr (kPinnedHost)
      cudaFreeHost(ptr_);
    else
      cudaFree(ptr_);
  }
  CudaBuffer(CudaBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  CudaBuffer& operator=(CudaBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};
using DeviceBuffer = CudaBuffer<false>;
using PinnedBuffer = CudaBuffer<true>;

DeviceBuffer upload(const void* host, std::size_t bytes) {
  DeviceBuffer d(bytes);
  if (bytes) CUDA_CHECK(cudaMemcpy(d.as<void>(), host, bytes, cudaMemcpyHostToDevice));
  return d;
}

// One (possibly fused) linear layer on the device: y[M, N] = x[M, K] W + b.
struct DeviceLinear {
  int K = 0, N = 0;
  bool quantized = false;
  cuda::AwqDeviceWeight awq;  // quantized: repacked tiles, scales, zeros
  DeviceBuffer dense;         // dense: fp16 (N, K), the nn.Linear layout
  DeviceBuffer bias;          // fp16 (N) or empty
  // quantized, with the fp16 weight cache: W dequantized once, fp16 (K, ld_cache) row-major, the
  // exact values the AWQ kernels multiply by.
  DeviceBuffer cache;
  int ld_cache = 0;
  int cache_min_m = 0;  // steps of at least this many rows use the copy (measure_fp16_crossovers)

  // Whether a step of M rows runs the AWQ kernels (else cuBLASLt on the fp16 copy or the dense
  // weight): CudaExecutor::linear's choice.
  bool runs_awq(int M) const { return quantized && !(cache.bytes() > 0 && M >= cache_min_m); }
  // Steps of M <= 31 rows whose AWQ plan can take a folded norm (AwqGemmPlan::fold; bit M of
  // fold_ok, known where bit M of fold_known is set): CudaExecutor::folds.
  mutable std::uint32_t fold_known = 0, fold_ok = 0;
};


// Fuses Linears that share their input (q/k/v, gate/up) into one along N.
DeviceLinear make_linear(const std::vector<const LinearWeight*>& parts) {
  DeviceLinear out;
  out.K = parts[0]->K;
  out.quantized = parts[0]->quantized;
  for (const LinearWeight* p : parts) {
    if (p->K != out.K) throw std::logic_error("fused linears must share K");
    if (p->quantized != out.quantized || (out.quantized && p->group_size != parts[0]->group_size))
      throw std::runtime_error(p->name + ": a fused projection mixes quantized and unquantized (or differently grouped) "
                               "weights; awqd needs q/k/v and gate/up quantized alike");
    out.N += p->N;
  }
  const int K = out.K, N = out.N;
  if (out.quantized) {
    const int G = parts[0]->group_size, groups = K / G;
    std::vector<std::int32_t> qweight(static_cast<std::size_t>(K) * (N / 8)), qzeros(static_cast<std::size_t>(groups) * (N / 8));
    std::vector<std::uint16_t> scales(static_cast<std::size_t>(groups) * N);
    int col = 0;  // first output column of this part
    for (const LinearWeight* p : parts) {
      const int w = p->N / 8;
      for (int k = 0; k < K; ++k)
        std::memcpy(&qweight[static_cast<std::size_t>(k) * (N / 8) + col / 8], p->qweight + static_cast<std::size_t>(k) * w, w * 4);
      for (int g = 0; g < groups; ++g) {
        std::memcpy(&qzeros[static_cast<std::size_t>(g) * (N / 8) + col / 8], p->qzeros + static_cast<std::size_t>(g) * w, w * 4);
        std::memcpy(&scales[static_cast<std::size_t>(g) * N + col], p->scales + static_cast<std::size_t>(g) * p->N, p->N * 2);
      }
      col += p->N;
    }
    out.awq = cuda::AwqDeviceWeight(cuda::awq_repack(qweight.data(), qzeros.data(), scales.data(), K, N, G));
  } else {
    std::vector<half_bits> w(static_cast<std::size_t>(N) * K);
    std::size_t row = 0;
    for (const LinearWeight* p : parts) {
      std::memcpy(&w[row * K], p->weight, static_cast<std::size_t>(p->N) * K * 2);
      row += p->N;
    }
    out.dense = upload(w.data(), w.size() * 2);
  }
  if (std::any_of(parts.begin(), parts.end(), [](const LinearWeight* p) { return p->bias != nullptr; })) {
    std::vector<half_bits> b(N, 0);
    int col = 0;
    for (const LinearWeight* p : parts) {
      if (p->bias) std::memcpy(&b[col], p->bias, p->N * 2);
      col += p->N;
    }
    out.bias = upload(b.data(), b.size() * 2);
  }
  return out;
}

std::size_t linear_bytes(const LinearWeight& w, int K, int N) {
  return w.quantized ? cuda::awq_weight_bytes(K, N, w.group_size) : static_cast<std::size_t>(K) * N * 2;
}

// The forward pass on one GPU: the whole model (tensor_parallel = 1), or rank `rank` of a
// tensor-parallel plan (engine/tensor_parallel.h), whose collectives go through `comm`. Every
// rank runs the same steps in lockstep (TensorParallelExecutor below); rank 0 also samples and
// returns the results, the other ranks return nothing. Construction leaves the KV pool
// unallocated: allocate_kv() with the block count every rank can hold.
class CudaExecutor final : public Executor {
 public:
  CudaExecutor(const ModelWeights& weights, const EngineConfig& config, const TensorParallelPlan& plan, int rank,
               cuda::TpComm* comm);
  ~CudaExecutor() override;
  // submit() stages the metadata and enqueues the whole step, the copy of its results included,
  // and returns; wait() synchronizes the stream and unpacks the results.
  void submit(const StepBatch& batch) override;
  StepResult wait() override;
  int num_kv_blocks() const override { return num_blocks_; }
  std::string describe() const override { return describe_; }
  std::vector<DeviceStatus> devices() const override {
    const cuda::DeviceUsage u = cuda::device_usage(gpu_);
    return {{gpu_, device_.name, u.memory_used, u.memory_total, kv_.bytes(), weight_bytes_ + weight_cache_bytes_,
             u.utilization}};
  }

  // KV blocks this GPU can hold in what is left after weights and activations (or the override).
  int kv_capacity() const;
  void allocate_kv(int num_blocks);
  int gpu() const { return gpu_; }

 private:
  struct Layer {
    DeviceBuffer input_norm, post_attn_norm, q_norm, k_norm;  // fp16 (hidden) / (head_dim)
    DeviceLinear qkv, o, gate_up, down;
  };

  // The step between submit() and wait(): what wait() and the profile replay need.
  struct Pending {
    int S = 0, R = 0;                 // sampled rows, then logits rows
    std::vector<int> top_logprobs;    // [S] top entries each sampled row returns
    bool graph = false;               // a pure decode step of bucket x context_bucket
    int bucket = 0, context_bucket = 0;
    int T = 0, B = 0;                 // tokens (0: an empty step), sequences
    int max_context = 0;              // an eager step
    bool decode_only = false;
    const int* penalty = nullptr;
    bool profile = false;
  };

  // An eager step after its metadata copy: the layers, then lm_head and the sampler on its R
  // rows (the first S sample).
  void eager_body(int T, int B, bool decode_only, int max_context, int R, int S, const int* penalty);
  // Profiling (EngineConfig::profile): while replaying_, mark() records an event that starts an
  // interval of category `c` on the stream; replay() runs a completed step again eagerly, without
  // KV-cache writes, and returns the time per category.
  void mark(GpuCategory c) {
    if (replaying_) mark_event(static_cast<int>(c));
  }
  void mark_event(int category);
  std::array<double, kGpuCategories> replay(const Pending& p);

  // silu_mul_ld > 0 (quantized l, stream-kernel M only): the input is SiLU(x[:, :K]) * x[:, K:2K]
  // of x [M, silu_mul_ld] (cuda::AwqGemmOptions::silu_mul_ld).
  // norm_out, norm_in: a residual add and RMSNorm folded into this linear (AwqGemmOptions; only
  // where folds() said so).
  void linear(const DeviceLinear& l, const __half* x, __half* y, int M, int silu_mul_ld = 0,
              const cuda::AwqGemmOptions::NormOut& norm_out = {}, const float* norm_in = nullptr);
  // Whether the residual add and RMSNorm between `before` and `after` fold into them in a step
  // of T rows (EngineConfig::fold_norms: both run the AWQ stream kernel).
  bool folds(const DeviceLinear& before, const DeviceLinear& after, int T) const;
  // y[M, N] = x[M, K] W by cuBLASLt, W fp16 in `layout` with leading dimension ldw: kNK (N, K),
  // the nn.Linear layout, or kKN (K, N); ldy defaults to N.
  void dense_gemm(const __half* x, const __half* w, cuda::WeightLayout layout, int ldw, const __half* bias, void* y,
                  bool y_fp32, int M, int N, int K, int ldy = 0);
  void forward(int T, int B, bool decode_only, int max_context);
  // The row-parallel outputs' sum over the ranks, in place (nothing with one GPU).
  void all_reduce(__half* data, std::size_t count);
  // After o_proj and down_proj: x += (the sum over the ranks of) proj; h = rmsnorm(x) * weight.
  // With peer access the all-reduce, the add and the norm are one kernel (decode steps).
  void reduce_add_rmsnorm(__half* proj, __half* x, __half* h, const __half* weight, int T);
  void ensure_logits_rows(int rows);
  // fp16_weight_cache: the fp16 copies of the AWQ weights, if the mode and the memory allow.
  void build_weight_cache();
  // Each cached weight's cache_min_m: the step size from which cuBLASLt on its fp16 copy beats
  // the AWQ kernel, timed on this GPU; returns what it found, for describe().
  std::string measure_fp16_crossovers();
  // Rank r's logits row stride: its vocabulary slice rounded up to 4 floats.
  int slice_stride(int r) const { return (plan_.ranks[r].vocab.size() + 3) / 4 * 4; }
  // Rank 0 receives every rank's logits slice of `rows` rows into its logits_.
  void gather_logits(int rows);
  void fill_sampler_params(const StepBatch& b, int rows);
  // lm_head (fp32 logits) on `rows` hidden rows, then the sampler on the first sample_rows.
  void head_and_sample(const __half* hidden, int rows, int sample_rows, const int* penalty);
  int graph_bucket(int batch) const;  // 0: no graph for this batch size
  // context_bucket bounds every context length of the step (it sizes the attention split).
  void decode_body(int bucket, int context_bucket);

  ModelConfig config_;  // this rank's shapes: its query heads, KV heads and intermediate columns
  EngineConfig engine_config_;
  TensorParallelPlan plan_;
  int rank_ = 0;
  bool root_ = true;               // rank 0: samples and returns results
  cuda::TpComm* comm_ = nullptr;  // null with one GPU
  int gpu_ = 0;
  cuda::DeviceInfo device_;
  cudaStream_t stream_ = nullptr;
  std::string describe_;
  std::size_t weight_bytes_ = 0;
  std::size_t weight_cache_bytes_ = 0;  // fp16 copies of the AWQ weights (0: none)
  std::string crossovers_;              // measure_fp16_crossovers' finding, for describe()

  // Weights.
  DeviceBuffer embed_, lm_head_, final_norm_, inv_freq_;
  const __half* head_ = nullptr;  // lm_head rows plan_.ranks[rank_].vocab: (vocab slice, hidden)
  std::vector<Layer> layers_;

  // Limits of one step, fixed at construction.
  int max_tokens_ = 0, max_seqs_ = 0, max_blocks_per_seq_ = 0;
  int vocab_stride_ = 0;  // logits row stride: the vocabulary (rank 0) or this rank's slice, rounded up to 4 floats

  // Activations, fp16 [max_tokens, ...].
  DeviceBuffer x_, h_, qkv_, attn_, gate_up_, act_, proj_;
  // [logits_rows, hidden] fp16; logits [logits_rows, vocab_stride] fp32 (rank 0: the whole
  // vocabulary, other ranks: their slice); rank 0 receives the other slices in gathered_: rank r's
  // [rows, slice_stride(r)] after those of ranks 1 .. r - 1 (gather_logits).
  DeviceBuffer rows_hidden_, logits_, gathered_;
  int logits_rows_ = 0;

  // Workspaces.
  DeviceBuffer gemm_ws_, cublas_ws_, decode_ws_;
  // EngineConfig::fused_decode_mlp: the decode MLP kernel's workspace when every layer can take
  // it (empty otherwise), and why not.
  DeviceBuffer decode_mlp_ws_;
  // EngineConfig::fold_norms: the norms' sums of squares per 64 columns, [2][max rows][D / 64]
  // (after o_proj, after down_proj); empty where the norms are not folded.
  DeviceBuffer fold_sumsq_;
  int fold_max_rows_ = 0;
  std::string decode_mlp_off_;

  // Paged KV pool: layer l's K at kv_ + (2l) * layer_elems, V at (2l + 1) * layer_elems.
  DeviceBuffer kv_;
  std::size_t kv_layer_elems_ = 0;
  int num_blocks_ = 0;
  double kv_budget_ = 0;         // bytes left for the pool after construction
  std::size_t kv_block_bytes_ = 0;

  // Step metadata (int32) and sampler I/O: pinned staging on the host, mirrors on the device.
  PinnedBuffer meta_host_, results_host_;
  DeviceBuffer meta_dev_, results_dev_, sampler_params_;
  std::size_t meta_capacity_ = 0;  // int32 elements
  PinnedBuffer params_host_;
  // Device views of the current step's metadata.
  const int* d_tokens_ = nullptr;
  const int* d_positions_ = nullptr;
  const int* d_cu_seqlens_ = nullptr;
  const int* d_context_lens_ = nullptr;
  const int* d_slots_ = nullptr;
  const int* d_block_tables_ = nullptr;
  const int* d_rows_ = nullptr;
  int step_max_blocks_ = 0;

  // Penalty lists (CSR), grown on demand.
  DeviceBuffer penalty_dev_;
  std::vector<int> penalty_host_;
  int penalty_entries_ = 0;

  // CUDA graphs of pure decode steps, one per bucket of sequences, reading their metadata from
  // decode_meta_dev_: tokens, positions, slots, context lens [max_seqs] each, then block
  // tables [max_seqs, max_blocks_per_seq].
  DeviceBuffer decode_meta_dev_;
  std::map<std::pair<int, int>, cudaGraphExec_t> graphs_;  // (batch bucket, context bucket)

  std::optional<Pending> pending_;

  // Profiling, allocated only with EngineConfig::profile.
  cudaEvent_t step_start_ = nullptr, step_end_ = nullptr;  // around a profiled step's GPU work
  std::vector<cudaEvent_t> events_;                        // the replay's marks, reused
  std::vector<int> event_categories_;                      // [marks] category starting at each
  bool replaying_ = false;
  DeviceBuffer no_kv_write_slots_;  // [max_tokens] all -1: the replay's slot mapping
};

CudaExecutor::CudaExecutor(const ModelWeights& w, const EngineConfig& ec, const TensorParallelPlan& plan, int rank,
                           cuda::TpComm* comm)
    : config_(rank_config(w.config(), plan.ranks[rank])),
      engine_config_(ec),
      plan_(plan),
      rank_(rank),
      root_(rank == 0),
      comm_(comm) {
  const ModelConfig& c = config_;
  const RankShard& shard = plan.ranks[rank];
  gpu_ = ec.gpus.empty() ? rank : ec.gpus[rank];
  if (cuda::device_count() == 0)
    throw std::runtime_error("device \"cuda\": no CUDA device is visible (driver missing or CUDA_VISIBLE_DEVICES empty); use --device cpu");
  CUDA_CHECK(cudaSetDevice(gpu_));
  device_ = cuda::device_info(gpu_);
  if (c.head_dim != 64 && c.head_dim != 128)
    throw std::runtime_error("the CUDA engine supports head_dim 64 and 128; this model has " + std::to_string(c.head_dim));
  if (c.hidden_size % 8 != 0 || w.config().intermediate_size % 8 != 0)
    throw std::runtime_error("the CUDA engine needs hidden_size and intermediate_size multiples of 8");

  max_tokens_ = std::max(ec.max_num_batched_tokens, ec.max_num_seqs);
  max_seqs_ = ec.max_num_seqs;
  max_blocks_per_seq_ = (c.max_position_embeddings + kKvBlockSize - 1) / kKvBlockSize + 1;
  const int vocab_slice = shard.vocab.size();
  vocab_stride_ = ((root_ ? c.vocab_size : vocab_slice) + 3) / 4 * 4;
  const int D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int qn = c.q_size(), kvn = c.kv_size(), qkv_n = qn + 2 * kvn;

  // Will this rank's weights fit? Count them before allocating anything.
  weight_bytes_ = static_cast<std::size_t>(V) * D * 2 + (c.tie_word_embeddings ? 0 : static_cast<std::size_t>(vocab_slice) * D * 2);
  for (const LayerWeights& L : w.layers())
    weight_bytes_ += linear_bytes(L.q, D, qn) + linear_bytes(L.k, D, kvn) + linear_bytes(L.v, D, kvn) +
                     linear_bytes(L.o, qn, D) + linear_bytes(L.gate, D, I) + linear_bytes(L.up, D, I) +
                     linear_bytes(L.down, I, D);
  std::size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const double usable = ec.gpu_memory_utilization * static_cast<double>(total_bytes) - static_cast<double>(total_bytes - free_bytes);
  if (static_cast<double>(weight_bytes_) > usable)
    throw std::runtime_error("the model needs " + gib(static_cast<double>(weight_bytes_)) + " of GPU memory for its weights" +
                             (plan.tp > 1 ? " on each of " + std::to_string(plan.tp) + " GPUs" : std::string()) + "; GPU " +
                             std::to_string(gpu_) + " (" + device_.name + ") has " + gib(usable) + " usable (" +
                             gib(static_cast<double>(total_bytes)) + " x gpu_memory_utilization " +
                             std::to_string(ec.gpu_memory_utilization) + ", " + gib(static_cast<double>(free_bytes)) +
                             " free). Use tensor_parallel over more GPUs or a smaller model.");

  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));

  // Weights: the embedding whole (a lookup needs no communication), lm_head's vocabulary slice.
  embed_ = upload(w.embed(), static_cast<std::size_t>(V) * D * 2);
  if (c.tie_word_embeddings) {
    head_ = embed_.as<__half>() + static_cast<std::size_t>(shard.vocab.begin) * D;
  } else {
    lm_head_ = upload(w.lm_head() + static_cast<std::size_t>(shard.vocab.begin) * D, static_cast<std::size_t>(vocab_slice) * D * 2);
    head_ = lm_head_.as<__half>();
  }
  final_norm_ = upload(w.final_norm(), static_cast<std::size_t>(D) * 2);
  const std::vector<float> inv_freq = cpu::rope_inv_freq(c);
  inv_freq_ = upload(inv_freq.data(), inv_freq.size() * sizeof(float));
  layers_.resize(c.num_layers);
  std::size_t gemm_ws = 0;
  std::set<std::array<int, 3>> sized;  // (K, N, G) of the AWQ shapes gemm_ws already covers
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerShard shard_weights = shard_layer(w.layers()[i], w.config(), shard, root_);
    const LayerWeights& L = shard_weights.weights;
    Layer& d = layers_[i];
    d.input_norm = upload(L.input_norm, D * 2);
    d.post_attn_norm = upload(L.post_attn_norm, D * 2);
    if (c.qk_norm) {
      d.q_norm = upload(L.q_norm, c.head_dim * 2);
      d.k_norm = upload(L.k_norm, c.head_dim * 2);
    }
    d.qkv = make_linear({&L.q, &L.k, &L.v});
    d.o = make_linear({&L.o});
    d.gate_up = make_linear({&L.gate, &L.up});
    d.down = make_linear({&L.down});
    // The layers share their shapes: each is sized once (awq_gemm_workspace_bytes plans every
    // step size up to the dequant threshold).
    for (const DeviceLinear* l : {&d.qkv, &d.o, &d.gate_up, &d.down})
      if (l->quantized && sized.insert({l->K, l->N, l->awq.view().group_size}).second)
        gemm_ws = std::max(gemm_ws, cuda::awq_gemm_workspace_bytes(max_tokens_, l->K, l->N, l->awq.view().group_size));
  }

  // Activations and workspaces.
  const std::size_t T = static_cast<std::size_t>(max_tokens_);
  x_ = DeviceBuffer(T * D * 2);
  h_ = DeviceBuffer(T * D * 2);
  proj_ = DeviceBuffer(T * D * 2);
  qkv_ = DeviceBuffer(T * qkv_n * 2);
  attn_ = DeviceBuffer(T * qn * 2);
  gate_up_ = DeviceBuffer(T * 2 * I * 2);
  act_ = DeviceBuffer(T * I * 2);
  ensure_logits_rows(max_seqs_);
  gemm_ws_ = DeviceBuffer(gemm_ws);
  if (gemm_ws) cuda::awq_gemm_workspace_init({gemm_ws_.as<void>(), gemm_ws}, stream_);
  cublas_ws_ = DeviceBuffer(kCublasWorkspace);
  decode_ws_ = DeviceBuffer(cuda::decode_attention_workspace_bytes(c.head_dim));
  CUDA_CHECK(cudaMemsetAsync(decode_ws_.as<void>(), 0, decode_ws_.bytes(), stream_));
  // The fused MLP half for steps of 1-8 tokens (kernels/decode_mlp.cuh): one GPU (its all-reduce
  // would sit between the phases), not deterministic mode, every layer's o/gate_up/down AWQ with
  // G = 128.
  if (!ec.fused_decode_mlp)
    decode_mlp_off_ = "off (fused_decode_mlp = false)";
  else if (ec.deterministic)
    decode_mlp_off_ = "off (deterministic)";
  else if (comm_ != nullptr)
    decode_mlp_off_ = "off (tensor parallel)";
  for (const Layer& L : layers_) {
    if (!decode_mlp_off_.empty()) break;
    if (!L.o.quantized || !L.gate_up.quantized || !L.down.quantized)
      decode_mlp_off_ = "off (unquantized MLP weights)";
    else if (const std::string why = cuda::decode_mlp_unsupported(L.o.awq.view(), L.gate_up.awq.view(), L.down.awq.view(), 1);
             !why.empty())
      decode_mlp_off_ = "off (" + why + ")";
  }
  if (decode_mlp_off_.empty()) {
    const Layer& L = layers_.front();
    const std::size_t bytes = cuda::decode_mlp_workspace_bytes(L.o.awq.view(), L.gate_up.awq.view(), L.down.awq.view());
    decode_mlp_ws_ = DeviceBuffer(bytes);
    cuda::decode_mlp_workspace_init(decode_mlp_ws_.as<void>(), bytes, stream_);
  }

  // Folded norms (EngineConfig::fold_norms): one GPU (the all-reduce fuses its own add and norm),
  // not deterministic mode (its tiled plans have no fold), hidden size in whole 64-column stripes.
  if (ec.fold_norms && !ec.deterministic && comm_ == nullptr && c.hidden_size % 64 == 0 &&
      cuda::awq_gemm_stream_max_m() > 0) {
    fold_max_rows_ = cuda::awq_gemm_stream_max_m();
    fold_sumsq_ = DeviceBuffer(2 * static_cast<std::size_t>(fold_max_rows_) * (c.hidden_size / 64) * sizeof(float));
  }

  // Step metadata: tokens, positions, slots (3 T), cu_seqlens, context lens (2 B + 1), block
  // tables (B x max blocks), logits rows (up to max_tokens).
  meta_capacity_ = 4 * T + 2 * static_cast<std::size_t>(max_seqs_) + 1 +
                   static_cast<std::size_t>(max_seqs_) * max_blocks_per_seq_;
  meta_host_ = PinnedBuffer(meta_capacity_ * sizeof(int));
  meta_dev_ = DeviceBuffer(meta_capacity_ * sizeof(int));
  decode_meta_dev_ = DeviceBuffer((4 + static_cast<std::size_t>(max_blocks_per_seq_)) * max_seqs_ * sizeof(int));
  if (ec.profile) {
    CUDA_CHECK(cudaEventCreate(&step_start_));
    CUDA_CHECK(cudaEventCreate(&step_end_));
    no_kv_write_slots_ = DeviceBuffer(T * sizeof(int));
    CUDA_CHECK(cudaMemsetAsync(no_kv_write_slots_.as<void>(), 0xff, no_kv_write_slots_.bytes(), stream_));  // -1
  }

  // What is left for the KV pool (allocate_kv), keeping room for graphs and cuBLASLt, and for
  // NCCL's buffers, which it allocates at the first collectives.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  kv_block_bytes_ = 2ull * c.num_layers * c.num_kv_heads * kKvBlockSize * c.head_dim * 2;
  const double reserve = (256.0 + (comm_ ? 512.0 : 0.0)) * (1 << 20);
  kv_budget_ = ec.gpu_memory_utilization * static_cast<double>(total_bytes) - static_cast<double>(total_bytes - free_bytes) - reserve;
  build_weight_cache();
}

void CudaExecutor::build_weight_cache() {
  const std::string& mode = engine_config_.fp16_weight_cache;
  if (mode != "auto" && mode != "on" && mode != "off")
    throw std::invalid_argument("fp16_weight_cache \"" + mode + "\": expected auto, on or off");
  if (mode == "off" || engine_config_.deterministic) return;  // deterministic: the AWQ kernels' fixed plans
  std::size_t bytes = 0;
  for (const Layer& d : layers_)
    for (const DeviceLinear* l : {&d.qkv, &d.o, &d.gate_up, &d.down})
      if (l->quantized) bytes += static_cast<std::size_t>(l->K) * ((l->N + 63) / 64 * 64) * 2;
  if (bytes == 0) return;
  const double room = std::max(0.0, kv_budget_);
  if (static_cast<double>(bytes) > (mode == "on" ? room : 0.5 * room)) {
    if (mode == "on")
      throw std::runtime_error("fp16_weight_cache on: the fp16 copies need " + gib(static_cast<double>(bytes)) + " on GPU " +
                               std::to_string(gpu_) + ", which has " + gib(room) +
                               " left after the weights and activations (use auto or off)");
    return;
  }
  for (Layer& d : layers_)
    for (DeviceLinear* l : {&d.qkv, &d.o, &d.gate_up, &d.down}) {
      if (!l->quantized) continue;
      l->ld_cache = (l->N + 63) / 64 * 64;
      l->cache_min_m = cuda::awq_gemm_fp16_crossover_m(l->K, l->N);
      l->cache = DeviceBuffer(static_cast<std::size_t>(l->K) * l->ld_cache * 2);
      cuda::awq_dequantize_f16(l->awq.view(), 0, l->ld_cache, l->cache.as<__half>(), l->ld_cache, stream_);
    }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  weight_cache_bytes_ = bytes;
  kv_budget_ -= static_cast<double>(bytes);
  crossovers_ = measure_fp16_crossovers();
}

std::string CudaExecutor::measure_fp16_crossovers() {
  // Run 25 (H100) found the crossover anywhere from 17 to past 128 rows depending on the weight's
  // size, and the H200 (same SMs, 1.5x the bandwidth) moves every one of them: cuBLASLt reads the
  // fp16 copy faster there while the AWQ kernels are bound by their instruction issue. So each
  // weight shape is timed here, at the step sizes where either may win, on up to 8 layers' weights
  // back to back (the real calls' order: weights rotate through more memory than the L2 holds),
  // the AWQ kernel with PDL as forward() calls it; the median of 5 passes each, interleaved. The
  // warm-up also loads cuBLASLt's kernels for these shapes before the first step needs them.
  // Steps of at most awq_gemm_stream_max_m() rows keep the AWQ kernel (it fuses SiLU at 1-2 rows and
  // wins 1.2-2x); past the largest probe cuBLASLt wins (the AWQ planner itself dequantizes to fp16
  // for cuBLASLt there, per call). awq_gemm_fp16_crossover_m (the H100 table) is what a weight
  // keeps when its step sizes cannot be probed (max_num_batched_tokens below the first probe).
  static constexpr int kProbes[] = {17, 24, 32, 48, 64, 96, 128, 192, 256};
  static constexpr int kLayersPerShape = 8, kPasses = 5;
  // The AWQ kernel must win by 3 % to keep a step size: where the two are within the timing noise
  // the choice would move between loads (H200, o_proj at 17-48 rows: three loads picked 17, 32
  // and 48), and there the copy was the better pick in the engine (docs/PERF.md runs 65-66:
  // down_proj at 64 rows, within 3 % in the probe, 1.1-1.8 % faster 64-sequence steps with it).
  static constexpr float kMargin = 1.03f;
  const int first = std::max(cuda::awq_gemm_stream_max_m() + 1, kProbes[0]);
  std::vector<int> probes;
  for (int m : kProbes)
    if (m >= first && m <= max_tokens_) probes.push_back(m);
  if (probes.empty()) return {};
  const auto start = std::chrono::steady_clock::now();
  struct Shape {
    const char* name;
    std::vector<DeviceLinear*> linears;  // every cached linear of this shape (all layers)
  };
  std::vector<Shape> shapes;
  int max_k = 0, max_n = 0;
  for (Layer& d : layers_) {
    const std::pair<const char*, DeviceLinear*> named[] = {
        {"qkv", &d.qkv}, {"o", &d.o}, {"gate_up", &d.gate_up}, {"down", &d.down}};
    for (const auto& [name, l] : named) {
      if (l->cache.bytes() == 0) continue;
      auto it = std::find_if(shapes.begin(), shapes.end(),
                             [&](const Shape& s) { return s.linears[0]->K == l->K && s.linears[0]->N == l->N; });
      if (it == shapes.end()) it = shapes.insert(shapes.end(), Shape{name, {}});
      it->linears.push_back(l);
      max_k = std::max(max_k, l->K);
      max_n = std::max(max_n, l->N);
    }
  }
  const int max_m = probes.back();
  DeviceBuffer x(static_cast<std::size_t>(max_m) * max_k * 2), y(static_cast<std::size_t>(max_m) * max_n * 2);
  CUDA_CHECK(cudaMemsetAsync(x.as<void>(), 0x3C, x.bytes(), stream_));  // 1.06 in every half
  struct Events {  // destroyed however the measurement ends
    cudaEvent_t e[2] = {nullptr, nullptr};
    ~Events() {
      for (cudaEvent_t x : e)
        if (x) cudaEventDestroy(x);
    }
  } events;
  cudaEvent_t* ev = events.e;
  for (int k = 0; k < 2; ++k) CUDA_CHECK(cudaEventCreate(&ev[k]));
  auto pass_ms = [&](const Shape& s, int m, bool fp16) {
    CUDA_CHECK(cudaEventRecord(ev[0], stream_));
    for (std::size_t i = 0; i < s.linears.size() && i < kLayersPerShape; ++i) {
      const DeviceLinear* l = s.linears[i];
      if (fp16) {
        dense_gemm(x.as<__half>(), l->cache.as<__half>(), cuda::WeightLayout::kKN, l->ld_cache, l->bias.as<__half>(),
                   y.as<__half>(), false, m, l->N, l->K);
      } else {
        cuda::AwqGemmOptions opt;
        opt.pdl = true;
        cuda::awq_gemm(x.as<__half>(), l->awq.view(), l->bias.as<__half>(), y.as<__half>(), m,
                       {gemm_ws_.as<void>(), gemm_ws_.bytes()}, stream_, opt);
      }
    }
    CUDA_CHECK(cudaEventRecord(ev[1], stream_));
    CUDA_CHECK(cudaEventSynchronize(ev[1]));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
    return ms;
  };
  std::string found;
  for (Shape& s : shapes) {
    std::vector<bool> fp16_wins;
    for (int m : probes) {
      pass_ms(s, m, false);  // warm-up: cuBLASLt's heuristic, modules, clocks
      pass_ms(s, m, true);
      std::vector<float> awq, fp16;
      for (int p = 0; p < kPasses; ++p) {
        awq.push_back(pass_ms(s, m, false));
        fp16.push_back(pass_ms(s, m, true));
      }
      std::nth_element(awq.begin(), awq.begin() + kPasses / 2, awq.end());
      std::nth_element(fp16.begin(), fp16.begin() + kPasses / 2, fp16.end());
      fp16_wins.push_back(fp16[kPasses / 2] < awq[kPasses / 2] * kMargin);
    }
    // The smallest probe from which the fp16 copy wins at every larger probe too.
    int i = static_cast<int>(probes.size());
    while (i > 0 && fp16_wins[i - 1]) --i;
    const int min_m = i == static_cast<int>(probes.size()) ? probes.back() + 1 : probes[i];
    for (DeviceLinear* l : s.linears) l->cache_min_m = min_m;
    found += std::string(found.empty() ? "" : ", ") + s.name + " " + std::to_string(min_m);
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  char took[32];
  std::snprintf(took, sizeof(took), "%.0f ms", ms);
  return "fp16 copies from " + found + " rows (measured, " + took + ")";
}

int CudaExecutor::kv_capacity() const {
  if (engine_config_.num_kv_blocks_override > 0) return engine_config_.num_kv_blocks_override;
  return kv_budget_ > 0 ? static_cast<int>(kv_budget_ / static_cast<double>(kv_block_bytes_)) : 0;
}

void CudaExecutor::allocate_kv(int num_blocks) {
  const ModelConfig& c = config_;
  CUDA_CHECK(cudaSetDevice(gpu_));
  if (num_blocks < 16)
    throw std::runtime_error("after the weights (" + gib(static_cast<double>(weight_bytes_)) + ") and activations, GPU " +
                             std::to_string(gpu_) + " has " + gib(std::max(0.0, kv_budget_)) +
                             " left for the KV cache: too little (raise gpu_memory_utilization, lower "
                             "max_num_batched_tokens/max_num_seqs, or use more GPUs)");
  num_blocks_ = num_blocks;
  kv_layer_elems_ = static_cast<std::size_t>(num_blocks_) * c.num_kv_heads * kKvBlockSize * c.head_dim;
  kv_ = DeviceBuffer(kv_layer_elems_ * 2 * c.num_layers * 2);
  describe_ = "cuda " + device_.name + " (sm_" + std::to_string(device_.sm_major) + std::to_string(device_.sm_minor) +
              "), " + std::to_string(num_blocks_) + " KV blocks of " + std::to_string(kKvBlockSize) + " tokens (" +
              gib(static_cast<double>(kv_.bytes())) + "), weights " + gib(static_cast<double>(weight_bytes_)) +
              (weight_cache_bytes_ ? " + fp16 cache " + gib(static_cast<double>(weight_cache_bytes_)) : std::string()) +
              (crossovers_.empty() ? std::string() : " (" + crossovers_ + ")") +
              ", fused decode MLP " + (decode_mlp_off_.empty() ? std::string("on") : decode_mlp_off_) +
              (fold_sumsq_.bytes() > 0 ? ", norms folded into the GEMMs up to " + std::to_string(fold_max_rows_) + " rows"
                                       : std::string(", norms as kernels"));
}

CudaExecutor::~CudaExecutor() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  if (step_start_) cudaEventDestroy(step_start_);
  if (step_end_) cudaEventDestroy(step_end_);
}

void CudaExecutor::ensure_logits_rows(int rows) {
  if (rows <= logits_rows_) return;
  // The buffers move: graphs captured with the old ones must go.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (auto& [key, exec] : graphs_) CUDA_CHECK(cudaGraphExecDestroy(exec));
  graphs_.clear();
  logits_rows_ = rows;
  rows_hidden_ = DeviceBuffer(static_cast<std::size_t>(rows) * config_.hidden_size * 2);
  logits_ = DeviceBuffer(static_cast<std::size_t>(rows) * vocab_stride_ * sizeof(float));
  if (root_ && plan_.tp > 1) {
    std::size_t per_row = 0;
    for (int r = 1; r < plan_.tp; ++r) per_row += slice_stride(r);
    gathered_ = DeviceBuffer(static_cast<std::size_t>(rows) * per_row * sizeof(float));
  }
  const std::size_t result_bytes = static_cast<std::size_t>(rows) * (2 + 2 * cuda::kSamplerMaxLogprobs) * 4;
  results_dev_ = DeviceBuffer(result_bytes);
  results_host_ = PinnedBuffer(result_bytes);
  sampler_params_ = DeviceBuffer(static_cast<std::size_t>(rows) * sizeof(cuda::SamplerRowParams));
  params_host_ = PinnedBuffer(static_cast<std::size_t>(rows) * sizeof(cuda::SamplerRowParams));
}

void CudaExecutor::dense_gemm(const __half* x, const __half* w, cuda::WeightLayout layout, int ldw, const __half* bias,
                              void* y, bool y_fp32, int M, int N, int K, int ldy) {
  cuda::DenseGemmArgs a;
  a.x = x;
  a.ldx = K;
  a.w = w;
  a.ldw = ldw;
  a.layout = layout;
  a.bias = bias;
  a.y = y;
  a.ldy = ldy > 0 ? ldy : N;
  a.y_fp32 = y_fp32;
  a.M = M;
  a.N = N;
  a.K = K;
  a.workspace = cublas_ws_.as<void>();
  a.workspace_bytes = cublas_ws_.bytes();
  cuda::cublaslt_gemm(a, stream_);
}

bool CudaExecutor::folds(const DeviceLinear& before, const DeviceLinear& after, int T) const {
  if (fold_sumsq_.bytes() == 0 || T > fold_max_rows_ || T >= 32) return false;
  auto takes_fold = [&](const DeviceLinear& l) {
    if (!l.runs_awq(T)) return false;
    const std::uint32_t bit = 1u << T;
    if (!(l.fold_known & bit)) {
      cuda::AwqGemmOptions opt;
      opt.pdl = true;
      const cuda::AwqGemmPlan plan = cuda::awq_gemm_plan(T, l.awq.view(), {gemm_ws_.as<void>(), gemm_ws_.bytes()}, opt);
      if (plan.fold) l.fold_ok |= bit;
      l.fold_known |= bit;
    }
    return (l.fold_ok & bit) != 0;
  };
  return takes_fold(before) && takes_fold(after);
}

void CudaExecutor::linear(const DeviceLinear& l, const __half* x, __half* y, int M, int silu_mul_ld,
                          const cuda::AwqGemmOptions::NormOut& norm_out, const float* norm_in) {
  if (l.runs_awq(M)) {
    cuda::AwqGemmOptions opt;
    opt.batch_invariant = engine_config_.deterministic;
    // sm_90: the GEMM starts streaming its weights while the norm, attention or SiLU kernel
    // before it runs (those trigger their dependents at their start: ptx::launch_dependents).
    opt.pdl = true;
    opt.silu_mul_ld = silu_mul_ld;
    opt.norm_out = norm_out;
    opt.norm_in_sumsq = norm_in;
    opt.norm_eps = config_.rms_norm_eps;
    cuda::awq_gemm(x, l.awq.view(), l.bias.as<__half>(), y, M, {gemm_ws_.as<void>(), gemm_ws_.bytes()}, stream_, opt);
  } else if (norm_out.residual != nullptr || norm_in != nullptr) {
    throw std::logic_error("CudaExecutor: a norm folded into a linear that does not run the AWQ stream kernel");
  } else if (l.quantized) {
    // From cache_min_m rows on (measured at load for each weight shape: measure_fp16_crossovers),
    // a quantized linear with an fp16 copy runs cuBLASLt on the copy (docs/PERF.md, runs 25, 64).
    dense_gemm(x, l.cache.as<__half>(), cuda::WeightLayout::kKN, l.ld_cache, l.bias.as<__half>(), y, false, M, l.N, l.K);
  } else {
    dense_gemm(x, l.dense.as<__half>(), cuda::WeightLayout::kNK, l.K, l.bias.as<__half>(), y, false, M, l.N, l.K);
  }
}

void CudaExecutor::forward(int T, int B, bool decode_only, int max_context) {
  const ModelConfig& c = config_;
  const int D = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int qn = c.q_size(), qkv_n = qn + 2 * c.kv_size();
  __half* x = x_.as<__half>();
  __half* h = h_.as<__half>();
  __half* proj = proj_.as<__half>();
  __half* qkv = qkv_.as<__half>();
  __half* attn = attn_.as<__half>();
  mark(GpuCategory::kOther);
  cuda::embedding_gather(x, embed_.as<__half>(), d_tokens_, T, D, 0, c.vocab_size, stream_);
  cuda::rmsnorm(h, x, layers_[0].input_norm.as<__half>(), T, D, c.rms_norm_eps, stream_);
  const int stream_max_m = cuda::awq_gemm_stream_max_m();  // 0 where the stream kernel cannot run
  // Every block of the down projection computes the SiLU of its rows again (N / 64 stripes), so
  // fusing it pays only while the rows are few. H200, llama3-8b-shaped (docs/PERF.md run 103),
  // ITL p50 fused up to 16 / 4 / 1 rows: 2 sequences 2.36 / 2.37 / 2.38 ms, 4: 2.61 / 2.60 / 2.58,
  // 8: 2.95 / 2.77 / 2.77, 16: 4.07 / 3.96 / 3.96.
  constexpr int kFusedSiluMaxRows = 2;
  // Folded norms (folds()): the sums of squares after o_proj and after down_proj.
  const std::size_t fold_stride = static_cast<std::size_t>(fold_max_rows_) * (D / 64);
  float* const sumsq_attn = fold_sumsq_.bytes() > 0 ? fold_sumsq_.as<float>() : nullptr;
  float* const sumsq_mlp = sumsq_attn != nullptr ? sumsq_attn + fold_stride : nullptr;
  const float* qkv_norm_in = nullptr;  // the previous layer's down_proj folded this layer's input norm
  for (int li = 0; li < c.num_layers; ++li) {
    Layer& L = layers_[li];  // h holds this layer's normed input (the previous layer's last step)
    mark(GpuCategory::kGemm);
    linear(L.qkv, h, qkv, T, 0, {}, qkv_norm_in);
    qkv_norm_in = nullptr;
    __half* k_cache = kv_.as<__half>() + (2 * static_cast<std::size_t>(li)) * kv_layer_elems_;
    __half* v_cache = k_cache + kv_layer_elems_;
    cuda::QkvRopeCacheArgs rope;
    rope.qkv = qkv;
    rope.q_out = qkv;  // in place
    rope.q_out_stride = qkv_n;
    rope.k_cache = k_cache;
    rope.v_cache = v_cache;
    rope.positions = d_positions_;
    rope.slot_mapping = replaying_ ? no_kv_write_slots_.as<int>() : d_slots_;  // the replay keeps the cache
    rope.inv_freq = inv_freq_.as<float>();
    rope.q_norm_weight = L.q_norm.as<__half>();
    rope.k_norm_weight = L.k_norm.as<__half>();
    rope.norm_eps = c.rms_norm_eps;
    rope.num_tokens = T;
    rope.num_heads = c.num_heads;
    rope.num_kv_heads = c.num_kv_heads;
    rope.head_dim = hd;
    rope.pdl = true;  // positions, slots and frequencies are staged from the host before the step
    mark(GpuCategory::kOther);
    cuda::qkv_rope_cache(rope, stream_);
    mark(GpuCategory::kAttention);
    if (decode_only) {
      cuda::DecodeAttentionArgs a;
      a.out = attn;
      a.out_stride = qn;
      a.q = qkv;
      a.q_stride = qkv_n;
      a.k_cache = k_cache;
      a.v_cache = v_cache;
      a.context_lens = d_context_lens_;
      a.block_tables = d_block_tables_;
      a.max_blocks_per_seq = step_max_blocks_;
      a.num_seqs = B;
      a.num_heads = c.num_heads;
      a.num_kv_heads = c.num_kv_heads;
      a.head_dim = hd;
      a.max_context_len = max_context;
      a.workspace = decode_ws_.as<void>();
      a.workspace_bytes = decode_ws_.bytes();
      // The KV blocks before each sequence's last stream while qkv_rope_cache (which writes only
      // q and this step's token) runs: block tables and lengths were staged before the step.
      a.pdl = true;
      cuda::decode_attention(a, stream_);
    } else {
      cuda::PrefillAttentionArgs a;
      a.out = attn;
      a.out_stride = qn;
      a.q = qkv;
      a.q_stride = qkv_n;
      a.k_cache = k_cache;
      a.v_cache = v_cache;
      a.cu_seqlens_q = d_cu_seqlens_;
      a.positions = d_positions_;
      a.block_tables = d_block_tables_;
      a.max_blocks_per_seq = step_max_blocks_;
      a.num_seqs = B;
      a.num_tokens = T;
      a.num_heads = c.num_heads;
      a.num_kv_heads = c.num_kv_heads;
      a.head_dim = hd;
      cuda::prefill_attention(a, stream_);
    }
    const bool last = li + 1 == c.num_layers;
    const __half* next_norm = last ? final_norm_.as<__half>() : layers_[li + 1].input_norm.as<__half>();
    mark(GpuCategory::kGemm);
    if (decode_mlp_ws_.bytes() > 0 && T <= cuda::kDecodeMlpMaxRows) {
      // o_proj, add_rmsnorm, gate_up, SiLU, down_proj and the next add_rmsnorm in one kernel.
      cuda::DecodeMlpArgs a;
      a.o = L.o.awq.view();
      a.gate_up = L.gate_up.awq.view();
      a.down = L.down.awq.view();
      a.o_bias = L.o.bias.as<__half>();
      a.gate_up_bias = L.gate_up.bias.as<__half>();
      a.down_bias = L.down.bias.as<__half>();
      a.attn = attn;
      a.attn_ld = qn;
      a.residual = x;
      a.out = h;
      a.post_norm = L.post_attn_norm.as<__half>();
      a.next_norm = next_norm;
      a.eps = c.rms_norm_eps;
      a.M = T;
      a.pdl = true;  // attention triggers its dependents; the kernel reads attn after its wait
      a.workspace = decode_mlp_ws_.as<void>();
      a.workspace_bytes = decode_mlp_ws_.bytes();
      cuda::decode_mlp(a, stream_);
      continue;
    }
    // With the norms folded, o_proj writes the residual and the normed input without its 1 / rms
    // (into h), and gate_up scales its sums by it; likewise down_proj and the next layer's qkv.
    const bool fold_attn = folds(L.o, L.gate_up, T);
    if (fold_attn) {
      linear(L.o, attn, h, T, 0, {x, L.post_attn_norm.as<__half>(), sumsq_attn});
    } else {
      linear(L.o, attn, proj, T);
      reduce_add_rmsnorm(proj, x, h, L.post_attn_norm.as<__half>(), T);
    }
    mark(GpuCategory::kGemm);
    linear(L.gate_up, h, gate_up_.as<__half>(), T, 0, {}, fold_attn ? sumsq_attn : nullptr);
    // The final norm stays a kernel: lm_head (cuBLASLt) cannot scale its rows.
    const bool fold_mlp = !last && folds(L.down, layers_[li + 1].qkv, T);
    __half* const down_out = fold_mlp ? h : proj;
    const cuda::AwqGemmOptions::NormOut down_norm =
        fold_mlp ? cuda::AwqGemmOptions::NormOut{x, next_norm, sumsq_mlp} : cuda::AwqGemmOptions::NormOut{};
    if (L.down.quantized && T <= std::min(stream_max_m, kFusedSiluMaxRows) && !engine_config_.deterministic) {
      // Steps of 1-2 tokens: the down projection's stream kernel computes SiLU(gate) * up itself
      // while loading its input (same arithmetic as silu_mul): one kernel and one pass fewer.
      linear(L.down, gate_up_.as<__half>(), down_out, T, 2 * I, down_norm);
    } else {
      mark(GpuCategory::kOther);
      cuda::silu_mul(act_.as<__half>(), I, gate_up_.as<__half>(), gate_up_.as<__half>() + I, 2 * I, T, I, stream_);
      mark(GpuCategory::kGemm);
      linear(L.down, act_.as<__half>(), down_out, T, 0, down_norm);
    }
    if (fold_mlp)
      qkv_norm_in = sumsq_mlp;
    else
      reduce_add_rmsnorm(proj, x, h, next_norm, T);
  }
}

void CudaExecutor::fill_sampler_params(const StepBatch& b, int rows) {
  auto* params = params_host_.as<cuda::SamplerRowParams>();
  const int S = static_cast<int>(b.sample_seqs.size());
  for (int s = 0; s < rows; ++s) {
    cuda::SamplerRowParams& r = params[s];
    r = {};
    r.temperature = 0.0f;  // padding rows of a graph batch: greedy, results ignored
    if (s >= S) continue;
    const SamplingContext& ctx = b.sample_contexts[s];
    const SamplingParams& p = *ctx.params;
    r.temperature = p.temperature;
    r.top_p = p.top_p;
    r.top_k = p.top_k;
    r.min_p = p.min_p;
    r.repetition_penalty = p.repetition_penalty;
    r.presence_penalty = p.presence_penalty;
    r.frequency_penalty = p.frequency_penalty;
    r.logprobs = p.logprobs;
    r.seed = p.seed;
    r.position = ctx.position;
  }
  CUDA_CHECK(cudaMemcpyAsync(sampler_params_.as<void>(), params, rows * sizeof(cuda::SamplerRowParams),
                             cudaMemcpyHostToDevice, stream_));
}

void CudaExecutor::all_reduce(__half* data, std::size_t count) {
  if (comm_ == nullptr) return;
  comm_->all_reduce(rank_, data, count, stream_,
                    engine_config_.deterministic ? cuda::AllReducePath::kDeterministic : cuda::AllReducePath::kAuto);
}

void CudaExecutor::reduce_add_rmsnorm(__half* proj, __half* x, __half* h, const __half* weight, int T) {
  const ModelConfig& c = config_;
  if (comm_ != nullptr) mark(GpuCategory::kCommunication);  // the fused kernel counts as communication
  if (comm_ != nullptr && !engine_config_.deterministic &&
      comm_->all_reduce_add_rmsnorm(rank_, proj, x, h, weight, T, c.hidden_size, c.rms_norm_eps, stream_))
    return;
  all_reduce(proj, static_cast<std::size_t>(T) * c.hidden_size);
  mark(GpuCategory::kOther);
  cuda::add_rmsnorm(h, x, proj, weight, T, c.hidden_size, c.rms_norm_eps, stream_);
}

void CudaExecutor::gather_logits(int rows) {
  const int tp = plan_.tp;
  std::vector<float*> recv(tp, nullptr);
  std::vector<std::size_t> counts(tp, 0);
  std::size_t offset = 0;
  for (int r = 1; r < tp; ++r) {
    recv[r] = gathered_.as<float>() + offset;
    counts[r] = static_cast<std::size_t>(rows) * slice_stride(r);
    offset += counts[r];
  }
  comm_->gather_to_root(rank_, logits_.as<float>(), static_cast<std::size_t>(rows) * vocab_stride_, recv, counts, stream_);
  if (!root_) return;
  for (int r = 1; r < tp; ++r) {
    const Span& v = plan_.ranks[r].vocab;
    CUDA_CHECK(cudaMemcpy2DAsync(logits_.as<float>() + v.begin, vocab_stride_ * sizeof(float), recv[r],
                                 slice_stride(r) * sizeof(float), v.size() * sizeof(float), rows,
                                 cudaMemcpyDeviceToDevice, stream_));
  }
}

void CudaExecutor::head_and_sample(const __half* hidden, int rows, int sample_rows, const int* penalty) {
  const ModelConfig& c = config_;
  // lm_head on this rank's vocabulary slice; rank 0's slice starts at column 0 of its logits.
  mark(GpuCategory::kLmHead);
  dense_gemm(hidden, head_, cuda::WeightLayout::kNK, c.hidden_size, nullptr, logits_.as<float>(), true, rows,
             plan_.ranks[rank_].vocab.size(), c.hidden_size, vocab_stride_);
  if (comm_ != nullptr) {
    mark(GpuCategory::kCommunication);
    gather_logits(rows);
  }
  if (!root_ || sample_rows == 0) return;
  const std::size_t C = static_cast<std::size_t>(logits_rows_);
  cuda::SampleArgs a;
  a.logits = logits_.as<float>();
  a.logits_stride = vocab_stride_;
  a.vocab = c.vocab_size;
  a.rows = sample_rows;
  a.params = sampler_params_.as<cuda::SamplerRowParams>();
  if (penalty != nullptr) {
    a.penalty_offsets = penalty;
    a.penalty_tokens = penalty + sample_rows + 1;
    const int n = penalty_entries_;
    a.penalty_counts = a.penalty_tokens + n;
    a.penalty_raw = reinterpret_cast<float*>(const_cast<int*>(a.penalty_counts + n));
  }
  a.out_tokens = results_dev_.as<int>();
  a.out_logprobs = reinterpret_cast<float*>(a.out_tokens + C);
  a.out_top_tokens = a.out_tokens + 2 * C;
  a.out_top_logprobs = reinterpret_cast<float*>(a.out_tokens + 2 * C + C * cuda::kSamplerMaxLogprobs);
  mark(GpuCategory::kSampler);
  cuda::sample(a, stream_);
}

int CudaExecutor::graph_bucket(int batch) const {
  for (int b : {1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 224, 256})
    if (b >= batch && b <= max_seqs_) return b;
  return batch <= max_seqs_ && max_seqs_ <= 1024 ? max_seqs_ : 0;
}

void CudaExecutor::decode_body(int bucket, int context_bucket) {
  // Everything of a pure decode step after the metadata copy, with fixed pointers and sizes:
  // what a CUDA graph captures.
  d_tokens_ = decode_meta_dev_.as<int>();
  d_positions_ = d_tokens_ + max_seqs_;
  d_slots_ = d_positions_ + max_seqs_;
  d_context_lens_ = d_slots_ + max_seqs_;
  d_block_tables_ = d_context_lens_ + max_seqs_;
  step_max_blocks_ = max_blocks_per_seq_;
  forward(bucket, bucket, /*decode_only=*/true, context_bucket);
  head_and_sample(h_.as<__half>(), bucket, bucket, nullptr);
}

void CudaExecutor::submit(const StepBatch& b) {
  const ModelConfig& c = config_;
  const int T = b.num_tokens(), B = b.num_seqs();
  const int S = static_cast<int>(b.sample_seqs.size());
  const int R = S + static_cast<int>(b.logits_rows.size());
  if (pending_) throw std::logic_error("CudaExecutor::submit: the previous step was not waited for");
  CUDA_CHECK(cudaSetDevice(gpu_));
  if (T > max_tokens_ || B > max_seqs_ || b.max_blocks_per_seq > max_blocks_per_seq_)
    throw std::invalid_argument("step of " + std::to_string(T) + " tokens / " + std::to_string(B) +
                                " sequences exceeds the executor's limits (" + std::to_string(max_tokens_) + " / " +
                                std::to_string(max_seqs_) + ")");
  Pending p;
  if (T == 0) {
    pending_ = std::move(p);
    return;
  }
  ensure_logits_rows(R);
  const int V = c.vocab_size;
  bool any_penalty = false;
  for (const auto& ctx : b.sample_contexts) any_penalty |= ctx.params->has_penalties();
  p.T = T;
  p.B = B;
  p.S = S;
  p.R = R;
  for (const auto& ctx : b.sample_contexts) p.top_logprobs.push_back(ctx.params->logprobs);
  p.profile = b.profile && step_start_ != nullptr;
  if (p.profile) CUDA_CHECK(cudaEventRecord(step_start_, stream_));

  // A pure decode step (one new token per sequence, each sampling, no logits asked) replays a
  // CUDA graph captured for the smallest bucket of sequences that holds it; padding rows decode a
  // dummy token whose K/V is not cached.
  const bool decode_only = T == B && !engine_config_.deterministic;
  const int bucket = decode_only ? graph_bucket(B) : 0;
  const bool use_graph = engine_config_.cuda_graphs && decode_only && S == B && R == S && !any_penalty && bucket > 0;
  if (use_graph) {
    int* m = meta_host_.as<int>();
    const int Sx = max_seqs_;
    int* tokens = m;
    int* positions = m + Sx;
    int* slots = m + 2 * Sx;
    int* context = m + 3 * Sx;
    int* tables = m + 4 * Sx;
    for (int i = 0; i < bucket; ++i) {
      const bool real = i < B;
      tokens[i] = real ? b.token_ids[i] : 0;
      positions[i] = real ? b.positions[i] : 0;
      slots[i] = real ? b.slot_mapping[i] : -1;
      context[i] = real ? b.context_lens[i] : 1;
      int* row = tables + static_cast<std::size_t>(i) * max_blocks_per_seq_;
      if (real) {
        std::memcpy(row, &b.block_tables[static_cast<std::size_t>(i) * b.max_blocks_per_seq], b.max_blocks_per_seq * sizeof(int));
      } else {
        row[0] = 0;  // any valid block: a padding row reads one token and its result is dropped
      }
    }
    // Copy the first `bucket` entries of each region (regions are max_seqs apart).
    CUDA_CHECK(cudaMemcpyAsync(decode_meta_dev_.as<void>(), m, 4 * static_cast<std::size_t>(Sx) * sizeof(int),
                               cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpy2DAsync(decode_meta_dev_.as<int>() + 4 * Sx, max_blocks_per_seq_ * sizeof(int), tables,
                                 max_blocks_per_seq_ * sizeof(int), b.max_blocks_per_seq * sizeof(int), bucket,
                                 cudaMemcpyHostToDevice, stream_));
    if (root_) fill_sampler_params(b, bucket);
    // Contexts are bucketed by powers of two from 256, so the attention split fits the step.
    const int max_context = *std::max_element(b.context_lens.begin(), b.context_lens.end());
    int context_bucket = 256;
    while (context_bucket < max_context) context_bucket *= 2;
    p.graph = true;
    p.bucket = bucket;
    p.context_bucket = context_bucket;
    const auto key = std::make_pair(bucket, context_bucket);
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      decode_body(bucket, context_bucket);  // eager first: warms kernels and cuBLASLt plans, gives this step's result
      cudaGraph_t graph = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      decode_body(bucket, context_bucket);
      CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
      cudaGraphExec_t exec = nullptr;
      CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      CUDA_CHECK(cudaGraphDestroy(graph));
      graphs_.emplace(key, exec);
    } else {
      CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
    }
  } else {
    // Metadata, one copy.
    int* m = meta_host_.as<int>();
    std::size_t off = 0;
    auto put = [&](const std::vector<std::int32_t>& v) {
      const int* dev = meta_dev_.as<int>() + off;
      std::memcpy(m + off, v.data(), v.size() * sizeof(int));
      off += v.size();
      return dev;
    };
    d_tokens_ = put(b.token_ids);
    d_positions_ = put(b.positions);
    d_slots_ = put(b.slot_mapping);
    d_cu_seqlens_ = put(b.cu_seqlens_q);
    d_context_lens_ = put(b.context_lens);
    d_block_tables_ = put(b.block_tables);
    step_max_blocks_ = b.max_blocks_per_seq;
    std::vector<std::int32_t> rows;
    rows.reserve(R);
    for (int s : b.sample_seqs) rows.push_back(b.cu_seqlens_q[s + 1] - 1);
    rows.insert(rows.end(), b.logits_rows.begin(), b.logits_rows.end());
    d_rows_ = put(rows);
    // Penalty lists (CSR over the sampling rows) after the metadata.
    const int* penalty = nullptr;
    if (any_penalty && root_) {
      std::vector<int> offsets{0}, tokens, counts;
      for (const auto& ctx : b.sample_contexts) {
        if (ctx.params->has_penalties())
          cuda::build_penalty_list(ctx.prompt.data(), ctx.prompt.size(), ctx.output.data(), ctx.output.size(), V,
                                   tokens, counts);
        offsets.push_back(static_cast<int>(tokens.size()));
      }
      penalty_entries_ = static_cast<int>(tokens.size());
      const std::size_t need = offsets.size() + 3 * tokens.size();  // offsets, tokens, counts, raw
      if (penalty_dev_.bytes() < need * sizeof(int)) {
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        penalty_dev_ = DeviceBuffer(need * sizeof(int) * 2);
      }
      offsets.insert(offsets.end(), tokens.begin(), tokens.end());
      offsets.insert(offsets.end(), counts.begin(), counts.end());
      penalty_host_.assign(offsets.begin(), offsets.end());
      CUDA_CHECK(cudaMemcpyAsync(penalty_dev_.as<void>(), penalty_host_.data(), penalty_host_.size() * sizeof(int),
                                 cudaMemcpyHostToDevice, stream_));
      penalty = penalty_dev_.as<int>();
    }
    CUDA_CHECK(cudaMemcpyAsync(meta_dev_.as<void>(), m, off * sizeof(int), cudaMemcpyHostToDevice, stream_));
    if (R > 0 && S > 0 && root_) fill_sampler_params(b, S);
    p.decode_only = decode_only;
    p.max_context = *std::max_element(b.context_lens.begin(), b.context_lens.end());
    p.penalty = penalty;
    eager_body(T, B, decode_only, p.max_context, R, S, penalty);
  }
  // The results come back in the same stream order; wait() synchronizes once.
  if (root_ && S > 0)
    CUDA_CHECK(cudaMemcpyAsync(results_host_.as<void>(), results_dev_.as<void>(), results_dev_.bytes(),
                               cudaMemcpyDeviceToHost, stream_));
  if (p.profile) CUDA_CHECK(cudaEventRecord(step_end_, stream_));
  pending_ = std::move(p);
}

void CudaExecutor::eager_body(int T, int B, bool decode_only, int max_context, int R, int S, const int* penalty) {
  forward(T, B, decode_only, max_context);
  if (R == 0) return;
  // lm_head on the rows that need logits only.
  mark(GpuCategory::kOther);
  cuda::embedding_gather(rows_hidden_.as<__half>(), h_.as<__half>(), d_rows_, R, config_.hidden_size, 0, T, stream_);
  head_and_sample(rows_hidden_.as<__half>(), R, S, penalty);
}

StepResult CudaExecutor::wait() {
  if (!pending_) throw std::logic_error("CudaExecutor::wait: no step was submitted");
  const Pending p = std::move(*pending_);
  pending_.reset();
  StepResult result;
  if (p.T == 0) return result;  // an empty step
  CUDA_CHECK(cudaSetDevice(gpu_));
  const int V = config_.vocab_size;
  const int S = p.S, R = p.R;
  if (root_ && R > S) {
    // Logits go to pageable memory, which a copy would block on anyway: copy them here.
    result.logits.resize(static_cast<std::size_t>(R - S) * V);
    CUDA_CHECK(cudaMemcpy2DAsync(result.logits.data(), V * sizeof(float),
                                 logits_.as<float>() + static_cast<std::size_t>(S) * vocab_stride_,
                                 vocab_stride_ * sizeof(float), V * sizeof(float), R - S, cudaMemcpyDeviceToHost,
                                 stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // also frees the host staging for the next step
  if (p.profile) {
    GpuStepProfile prof;
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, step_start_, step_end_));
    prof.step_ms = ms;
    prof.graph = p.graph;
    const auto t0 = std::chrono::steady_clock::now();
    prof.category_ms = replay(p);
    prof.replay_host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (root_) result.gpu_profile = prof;
  }
  if (!root_) return result;
  const std::size_t C = static_cast<std::size_t>(logits_rows_);
  const int* h_tokens = results_host_.as<int>();
  const float* h_logprobs = reinterpret_cast<const float*>(h_tokens + C);
  const int* h_top_tokens = h_tokens + 2 * C;
  const float* h_top_logprobs = reinterpret_cast<const float*>(h_tokens + 2 * C + C * cuda::kSamplerMaxLogprobs);
  result.samples.resize(S);
  for (int s = 0; s < S; ++s) {
    SampleResult& r = result.samples[s];
    r.token = h_tokens[s];
    r.logprob = h_logprobs[s];
    for (int k = 0; k < p.top_logprobs[s]; ++k)
      r.top.push_back({h_top_tokens[s * cuda::kSamplerMaxLogprobs + k], h_top_logprobs[s * cuda::kSamplerMaxLogprobs + k]});
  }
  return result;
}

void CudaExecutor::mark_event(int category) {
  const std::size_t n = event_categories_.size();
  if (n == events_.size()) {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
  }
  CUDA_CHECK(cudaEventRecord(events_[n], stream_));
  event_categories_.push_back(category);
}

std::array<double, kGpuCategories> CudaExecutor::replay(const Pending& p) {
  // The step's metadata, sampler parameters and penalty lists are still on the device (the next
  // submit() rewrites them). Its results were copied out already; the replay overwrites them.
  event_categories_.clear();
  replaying_ = true;
  try {
    if (p.graph) {
      decode_body(p.bucket, p.context_bucket);
    } else {
      eager_body(p.T, p.B, p.decode_only, p.max_context, p.R, p.S, p.penalty);
    }
    mark_event(-1);  // the end of the last interval
  } catch (...) {
    replaying_ = false;
    throw;
  }
  replaying_ = false;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::array<double, kGpuCategories> out{};
  for (std::size_t i = 0; i + 1 < event_categories_.size(); ++i) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
    out[event_categories_[i]] += ms;
  }
  return out;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls `done` for up to `budget` before the caller goes to sleep; true when it came true.
template <typename Done>
bool spin_until(Done done, std::chrono::microseconds budget) {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if (i % 1024 == 0) {
      if (std::chrono::steady_clock::now() - start > budget) return false;
      std::this_thread::yield();  // another runnable thread (an oversubscribed host) goes first
    }
  }
}

// One thread per GPU. run(fn) calls fn(rank) on every rank's thread at once and returns when all
// have finished, rethrowing the first exception. Hand-offs poll before sleeping: a decode step
// takes a few milliseconds, and a futex wake-up at each end of it would add tens of microseconds.
class RankThreads {
 public:
  explicit RankThreads(int n) : errors_(n) {
    for (int r = 0; r < n; ++r) threads_.emplace_back([this, r] { loop(r); });
  }
  ~RankThreads() {
    stop_.store(true);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // on_error runs once, on this thread, as soon as one rank has failed while others may still be
  // blocked in a collective waiting for it.
  void run(const std::function<void(int)>& fn, const std::function<void()>& on_error = {}) {
    job_ = &fn;
    for (auto& e : errors_) e = nullptr;
    failed_.store(false);
    pending_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    bool handled = false;
    for (int left = pending_.load(std::memory_order_acquire); left != 0; left = pending_.load(std::memory_order_acquire)) {
      if (failed_.load() && !handled) {
        handled = true;
        if (on_error) on_error();
      }
      if (!spin_until([&] { return pending_.load(std::memory_order_acquire) != left; }, kStepPoll))
        pending_.wait(left, std::memory_order_acquire);
    }
    job_ = nullptr;
    for (auto& e : errors_)
      if (e) std::rethrow_exception(e);
  }

 private:
  static constexpr std::chrono::microseconds kStepPoll{20000};  // the engine thread, during a step
  static constexpr std::chrono::microseconds kIdlePoll{5000};   // a rank thread, between steps

  void loop(int rank) {
    std::uint64_t seen = 0;
    for (;;) {
      if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }, kIdlePoll))
        generation_.wait(seen, std::memory_order_acquire);
      const std::uint64_t g = generation_.load(std::memory_order_acquire);
      if (g == seen) continue;  // spurious wake-up
      seen = g;
      if (stop_.load()) return;
      try {
        (*job_)(rank);
      } catch (...) {
        errors_[rank] = std::current_exception();
        failed_.store(true);
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1 || failed_.load()) pending_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::vector<std::exception_ptr> errors_;  // [rank], written by that rank's thread
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> failed_{false}, stop_{false};
};

// Tensor parallelism (engine/tensor_parallel.h): one CudaExecutor per GPU, each created on, and
// driven only by, its own thread (so each thread keeps its device current and issues its own
// collectives, as NCCL wants with one thread per GPU). A step runs on all ranks at once; the
// all-reduces inside it keep them in lockstep; rank 0 samples and its result is the step's.
// After any rank fails the communicators are aborted (so no rank waits forever for it) and the
// executor refuses further steps.
class TensorParallelExecutor final : public Executor {
 public:
  TensorParallelExecutor(const ModelWeights& weights, const EngineConfig& config, const TensorParallelPlan& plan)
      : plan_(plan), threads_(plan.tp) {
    cuda::TpCommOptions options;
    options.allow_p2p = config.p2p_all_reduce;
    comm_ = std::make_unique<cuda::TpComm>(config.gpus, options);
    ranks_.resize(plan.tp);
    run([&](int r) { ranks_[r] = std::make_unique<CudaExecutor>(weights, config, plan, r, comm_.get()); });
    int blocks = ranks_[0]->kv_capacity();
    for (const auto& r : ranks_) blocks = std::min(blocks, r->kv_capacity());
    run([&](int r) { ranks_[r]->allocate_kv(blocks); });
    std::string gpus;
    for (const auto& r : ranks_) gpus += (gpus.empty() ? "" : ",") + std::to_string(r->gpu());
    describe_ = "tensor_parallel " + std::to_string(plan.tp) + " over GPUs " + gpus + " (" + comm_->describe() + "; " +
                plan.describe() + "); rank 0: " + ranks_[0]->describe();
  }

  ~TensorParallelExecutor() override {
    // Each rank's CUDA objects are released on its own thread, then the communicators.
    try {
      threads_.run([&](int r) { ranks_[r].reset(); });
    } catch (...) {
    }
  }

  // Each rank thread enqueues its step (collectives included) and returns; wait() has every rank
  // synchronize its stream. The collectives keep the ranks in lockstep on the GPUs.
  void submit(const StepBatch& batch) override {
    run([&](int r) { ranks_[r]->submit(batch); });
  }
  StepResult wait() override {
    StepResult result;
    run([&](int r) {
      StepResult out = ranks_[r]->wait();
      if (r == 0) result = std::move(out);
    });
    return result;
  }
  int num_kv_blocks() const override { return ranks_[0]->num_kv_blocks(); }
  std::string describe() const override { return describe_; }
  std::vector<DeviceStatus> devices() const override {
    std::vector<DeviceStatus> out;
    for (const auto& r : ranks_) out.push_back(r->devices()[0]);
    return out;
  }

 private:
  void run(const std::function<void(int)>& fn) {
    if (!failure_.empty())
      throw std::runtime_error("the tensor-parallel engine stopped after an earlier failure: " + failure_);
    try {
      threads_.run(fn, [this] { comm_->abort(); });
    } catch (const std::exception& e) {
      failure_ = e.what();
      throw;
    }
  }

  TensorParallelPlan plan_;
  std::unique_ptr<cuda::TpComm> comm_;
  std::vector<std::unique_ptr<CudaExecutor>> ranks_;
  RankThreads threads_;  // last: its threads stop before the ranks and the communicators go
  std::string describe_;
  std::string failure_;
};

}  // namespace

std::unique_ptr<Executor> make_cuda_executor(const ModelWeights& weights, const EngineConfig& config) {
  const TensorParallelPlan plan = plan_tensor_parallel(weights.config(), config.tensor_parallel);
  EngineConfig c = config;
  if (c.gpus.empty())
    for (int g = 0; g < config.tensor_parallel; ++g) c.gpus.push_back(g);
  const int visible = cuda::device_count();
  if (visible == 0)
    throw std::runtime_error("device \"cuda\": no CUDA device is visible (driver missing or CUDA_VISIBLE_DEVICES empty); use --device cpu");
  if (static_cast<int>(c.gpus.size()) != config.tensor_parallel)
    throw std::runtime_error("tensor_parallel = " + std::to_string(config.tensor_parallel) + " needs that many GPUs, got " +
                             std::to_string(c.gpus.size()) + " ids");
  if (std::set<int>(c.gpus.begin(), c.gpus.end()).size() != c.gpus.size())
    throw std::runtime_error("the GPUs of one engine must be distinct");
  for (int g : c.gpus)
    if (g < 0 || g >= visible)
      throw std::runtime_error("GPU " + std::to_string(g) + " does not exist: " + std::to_string(visible) +
                               " CUDA device(s) are visible");
  if (plan.tp == 1) {
    auto e = std::make_unique<CudaExecutor>(weights, c, plan, 0, nullptr);
    e->allocate_kv(e->kv_capacity());
    return e;
  }
  return std::make_unique<TensorParallelExecutor>(weights, c, plan);
}

}  // namespace awqd
