// Benchmarks of the attention, fused-op and sampling kernels (built, never run by ctest).
//   bench_attention [report.md]
// Method (/work/.library/device/METHOD.md): the device's copy bandwidth measured first, in the
// same run (a 1 GiB device-to-device copy, bytes read + written); every kernel timed as a CUDA
// graph of back-to-back launches, warmed up, with device events, median of 15 replays; inputs
// rotate through >= 512 MiB of distinct buffers so nothing is served from the 50 MB L2; all
// data random (never zeros). Figures: decode attention in GB/s of KV bytes read (and % of the
// copy bandwidth), prefill in TFLOP/s (causal: 4 * head_dim * heads * sum of visible keys),
// fused ops in GB/s of the bytes they must move, the sampler in microseconds per call.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/activation.cuh"
#include "kernels/attention_decode.cuh"
#include "kernels/attention_prefill.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/device.cuh"
#include "kernels/embedding.cuh"
#include "kernels/launch.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "kernels/sampling.cuh"

namespace {

using namespace awqd::cuda;

constexpr std::size_t kRotateBytes = 512ull << 20;  // >> L2 (50 MB on H100)
constexpr int kReplays = 15;

// Fills n fp16 values with a hash in [-1, 1) (random-looking, never zero runs).
__global__ void fill_half(__half* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12, h *= 0x297A2D39u, h ^= h >> 15;
    p[i] = __float2half(static_cast<float>(h >> 8) * 0x1p-23f - 1.0f);
  }
}
__global__ void fill_float(float* p, std::size_t n, std::uint32_t seed, float scale) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12, h *= 0x297A2D39u, h ^= h >> 15;
    p[i] = scale * (static_cast<float>(h >> 8) * 0x1p-23f - 1.0f);
  }
}

template <typename T>
T* device_alloc(std::size_t n) {
  T* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)));
  return p;
}
__half* random_half(std::size_t n, std::uint32_t seed) {
  __half* p = device_alloc<__half>(n);
  fill_half<<<1024, 256>>>(p, n, seed);
  CUDA_CHECK_LAUNCH();
  return p;
}
template <typename T>
T* upload(const std::vector<T>& v) {
  T* p = device_alloc<T>(v.size());
  CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

// Median time of one call of `body(i)`, i = 0..launches-1 captured into a graph.
double time_us(int launches, const std::function<void(int, cudaStream_t)>& body) {
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int i = 0; i < std::min(launches, 3); ++i) body(i, stream);  // first-call setup, warm-up
  CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < launches; ++i) body(i, stream);
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  for (int w = 0; w < 2; ++w) CUDA_CHECK(cudaGraphLaunch(exec, stream));
  std::vector<float> ms(kReplays);
  for (auto& m : ms) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    CUDA_CHECK(cudaGraphLaunch(exec, stream));
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&m, start, stop));
  }
  std::sort(ms.begin(), ms.end());
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaStreamDestroy(stream));
  return 1000.0 * ms[ms.size() / 2] / launches;
}

// How many distinct input sets of `bytes` to rotate through so that the total beats the L2.
int rotation(std::size_t bytes) {
  return static_cast<int>(std::clamp<std::size_t>((kRotateBytes + bytes - 1) / bytes, 1, 64));
}

struct Report {
  std::vector<std::string> lines;
  void add(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::printf("%s\n", buf);
    std::fflush(stdout);
    lines.emplace_back(buf);
  }
};

double copy_bandwidth_gbs() {
  const std::size_t bytes = 1ull << 30;
  void* a = device_alloc<unsigned char>(bytes);
  void* b = device_alloc<unsigned char>(bytes);
  CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double us = time_us(4, [&](int, cudaStream_t s) {
    CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
  });
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  return 2.0 * bytes / us / 1e3;
}

// ---- decode attention -------------------------------------------------------------------------

void bench_decode(Report& r, double hbm, bool sweep) {
  constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128;
  const std::size_t slice = 16ull * kHeadDim;        // elements of one (block, head) slice
  const std::size_t block_elems = slice * kKvHeads;  // one block, all heads
  const std::size_t pool_blocks = (6ull << 30) / (block_elems * 2 * 2);  // K + V: 6 GiB
  __half* k_pool = random_half(pool_blocks * block_elems, 1);
  __half* v_pool = random_half(pool_blocks * block_elems, 2);
  const std::size_t ws_bytes = decode_attention_workspace_bytes(kHeadDim);
  void* ws = device_alloc<unsigned char>(ws_bytes);
  CUDA_CHECK(cudaMemset(ws, 0, ws_bytes));
  std::mt19937_64 rng(9);
  // "pdl": the same calls launched with Programmatic Dependent Launch (args.pdl), so each one
  // requests its first KV blocks while the call before it finishes, as in the engine (where the
  // kernel before it is the RoPE / cache write); the plain columns are isolated launches.
  r.add("| decode: batch | context | path | splits | us | KV GB/s | %% of copy BW | us, pdl | %% of "
        "copy BW, pdl |");
  r.add("|---|---|---|---|---|---|---|---|---|");
  for (const bool sm75 : {false, true}) {
    set_force_sm75_path(sm75);
    for (const int ctx : {512, 4096, 16384}) {
      for (const int batch : {1, 2, 4, 8, 16, 64}) {
        const int blocks_per_seq = ctx / 16;
        const std::size_t kv_bytes =
            static_cast<std::size_t>(batch) * ctx * kKvHeads * kHeadDim * 2 * 2;
        const int sets = std::min<int>(
            rotation(kv_bytes),
            static_cast<int>(pool_blocks / (static_cast<std::size_t>(batch) * blocks_per_seq)));
        // Each set: its own shuffled blocks of the pool, its own q and output.
        std::vector<int> perm(pool_blocks);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<int> tables(static_cast<std::size_t>(sets) * batch * blocks_per_seq);
        std::copy(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(tables.size()),
                  tables.begin());
        int* d_tables = upload(tables);
        int* d_ctx = upload(std::vector<int>(batch, ctx));
        __half* q = random_half(static_cast<std::size_t>(sets) * batch * kHeads * kHeadDim, 3);
        __half* out =
            device_alloc<__half>(static_cast<std::size_t>(sets) * batch * kHeads * kHeadDim);
        DecodeAttentionArgs a;
        a.out_stride = a.q_stride = kHeads * kHeadDim;
        a.k_cache = k_pool;
        a.v_cache = v_pool;
        a.context_lens = d_ctx;
        a.max_blocks_per_seq = blocks_per_seq;
        a.num_seqs = batch;
        a.num_heads = kHeads;
        a.num_kv_heads = kKvHeads;
        a.head_dim = kHeadDim;
        a.max_context_len = ctx;
        a.workspace = ws;
        a.workspace_bytes = ws_bytes;
        const int splits = decode_attention_splits(a);
        auto timed = [&](bool pdl) {
          return time_us(std::max(sets, 8), [&](int i, cudaStream_t s) {
            DecodeAttentionArgs b = a;
            const int set = i % sets;
            b.block_tables = d_tables + static_cast<std::size_t>(set) * batch * blocks_per_seq;
            b.q = q + static_cast<std::size_t>(set) * batch * kHeads * kHeadDim;
            b.out = out + static_cast<std::size_t>(set) * batch * kHeads * kHeadDim;
            b.pdl = pdl;
            decode_attention(b, s);
          });
        };
        const double us = timed(false), pdl_us = timed(true);
        const double gbs = kv_bytes / us / 1e3, pdl_gbs = kv_bytes / pdl_us / 1e3;
        // "sm75": the forced Turing path (registers); otherwise the automatic staging variant.
        const char* path = sm75 ? "sm75"
                           : decode_attention_register_staging(a) ? "auto: registers"
                                                                  : "auto: cp.async";
        r.add("| %d | %d | %s | %d | %.1f | %.0f | %.0f%% | %.1f | %.0f%% |", batch, ctx, path,
              splits, us, gbs, 100.0 * gbs / hbm, pdl_us, 100.0 * pdl_gbs / hbm);
        // The split count forced around the planner's choice (tuning data for choose_split),
        // same table with "forced" in the path column.
        if (sweep && !sm75) {
          for (const int forced : {1, 2, 3, 4, 8, 16, 24, 32, 48, 64}) {
            // 64: decode::kMaxSplits; at most one split per KV block
            if (forced > 64 || forced > blocks_per_seq || forced == splits) continue;
            bool pdl = false;
            auto run = [&](int i, cudaStream_t s) {
              DecodeAttentionArgs b = a;
              const int set = i % sets;
              b.num_splits = forced;
              b.pdl = pdl;
              b.block_tables = d_tables + static_cast<std::size_t>(set) * batch * blocks_per_seq;
              b.q = q + static_cast<std::size_t>(set) * batch * kHeads * kHeadDim;
              b.out = out + static_cast<std::size_t>(set) * batch * kHeads * kHeadDim;
              decode_attention(b, s);
            };
            try {  // one eager call first: splits beyond the workspace are refused, not timed
              run(0, nullptr);
              CUDA_CHECK(cudaDeviceSynchronize());
            } catch (const std::invalid_argument&) {
              continue;
            }
            const double fus = time_us(std::max(sets, 8), run);
            pdl = true;
            const double fpdl = time_us(std::max(sets, 8), run);
            const double fgbs = kv_bytes / fus / 1e3, fpdl_gbs = kv_bytes / fpdl / 1e3;
            r.add("| %d | %d | sm80+ forced | %d | %.1f | %.0f | %.0f%% | %.1f | %.0f%% |", batch,
                  ctx, forced, fus, fgbs, 100.0 * fgbs / hbm, fpdl, 100.0 * fpdl_gbs / hbm);
          }
        }
        CUDA_CHECK(cudaFree(d_tables));
        CUDA_CHECK(cudaFree(d_ctx));
        CUDA_CHECK(cudaFree(q));
        CUDA_CHECK(cudaFree(out));
      }
    }
  }
  set_force_sm75_path(false);
  CUDA_CHECK(cudaFree(k_pool));
  CUDA_CHECK(cudaFree(v_pool));
  CUDA_CHECK(cudaFree(ws));
}

// ---- prefill attention ------------------------------------------------------------------------

void bench_prefill(Report& r) {
  r.add("| prefill: sequences x tokens | heads | path | us | TFLOP/s |");
  r.add("|---|---|---|---|---|");
  struct Case {
    int seqs, tokens, heads, kv_heads, head_dim;
  };
  for (const bool sm75 : {false, true}) {
    set_force_sm75_path(sm75);
    for (const Case c :
         {Case{1, 4096, 32, 8, 128}, Case{4, 1024, 32, 8, 128}, Case{1, 4096, 16, 8, 64}}) {
      const int blocks = c.tokens / 16;
      const std::size_t cache =
          static_cast<std::size_t>(c.seqs) * blocks * c.kv_heads * 16 * c.head_dim;
      __half* k = random_half(cache, 4);
      __half* v = random_half(cache, 5);
      const int total = c.seqs * c.tokens;
      __half* q = random_half(static_cast<std::size_t>(total) * c.heads * c.head_dim, 6);
      __half* out = device_alloc<__half>(static_cast<std::size_t>(total) * c.heads * c.head_dim);
      std::vector<int> cu = {0}, pos, tables;
      for (int b = 0; b < c.seqs; ++b) {
        cu.push_back(cu.back() + c.tokens);
        for (int i = 0; i < c.tokens; ++i) pos.push_back(i);
        for (int i = 0; i < blocks; ++i) tables.push_back(b * blocks + i);
      }
      int* d_cu = upload(cu);
      int* d_pos = upload(pos);
      int* d_tables = upload(tables);
      PrefillAttentionArgs a;
      a.out = out;
      a.out_stride = a.q_stride = c.heads * c.head_dim;
      a.q = q;
      a.k_cache = k;
      a.v_cache = v;
      a.cu_seqlens_q = d_cu;
      a.positions = d_pos;
      a.block_tables = d_tables;
      a.max_blocks_per_seq = blocks;
      a.num_seqs = c.seqs;
      a.num_tokens = total;
      a.num_heads = c.heads;
      a.num_kv_heads = c.kv_heads;
      a.head_dim = c.head_dim;
      const double us = time_us(5, [&](int, cudaStream_t s) { prefill_attention(a, s); });
      const double flops =
          4.0 * c.head_dim * c.heads * c.seqs * (0.5 * c.tokens * (c.tokens + 1.0));
      r.add("| %d x %d | %d/%d x %d | %s | %.1f | %.1f |", c.seqs, c.tokens, c.heads, c.kv_heads,
            c.head_dim, sm75 ? "sm75" : "sm80+", us, flops / us / 1e6);
      for (void* p : {static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(q),
                      static_cast<void*>(out), static_cast<void*>(d_cu), static_cast<void*>(d_pos),
                      static_cast<void*>(d_tables)}) {
        CUDA_CHECK(cudaFree(p));
      }
    }
  }
  set_force_sm75_path(false);
}

// ---- fused ops --------------------------------------------------------------------------------

void bench_ops(Report& r, double hbm) {
  r.add("| op | shape | us | GB/s | %% of copy BW |");
  r.add("|---|---|---|---|---|");
  const std::size_t arena_elems = (1536ull << 20) / 2;  // 1.5 GiB of fp16, rotated through
  __half* arena = random_half(arena_elems, 7);
  __half* weights = random_half(1 << 20, 8);
  auto row = [&](const char* name, const std::string& shape, std::size_t bytes,
                 std::size_t set_elems, const std::function<void(__half*, cudaStream_t)>& op) {
    const int sets = std::min<int>(rotation(bytes), static_cast<int>(arena_elems / set_elems));
    const double us = time_us(std::max(sets, 8), [&](int i, cudaStream_t s) {
      op(arena + static_cast<std::size_t>(i % sets) * set_elems, s);
    });
    const double gbs = bytes / us / 1e3;
    r.add("| %s | %s | %.1f | %.0f | %.0f%% |", name, shape.c_str(), us, gbs, 100.0 * gbs / hbm);
  };
  const int hidden = 4096, inter = 14336;
  for (const int t : {1, 64, 4096}) {
    const std::size_t n = static_cast<std::size_t>(t) * hidden;
    row("rmsnorm", std::to_string(t) + "x4096", 4 * n, 2 * n,
        [&](__half* p, cudaStream_t s) { rmsnorm(p + n, p, weights, t, hidden, 1e-5f, s); });
    row("add_rmsnorm", std::to_string(t) + "x4096", 8 * n, 3 * n, [&](__half* p, cudaStream_t s) {
      add_rmsnorm(p + 2 * n, p + n, p, weights, t, hidden, 1e-5f, s);
    });
    const std::size_t m = static_cast<std::size_t>(t) * inter;
    row("silu_mul", std::to_string(t) + "x14336", 6 * m, 3 * m, [&](__half* p, cudaStream_t s) {
      silu_mul(p + 2 * m, inter, p, p + inter, 2 * inter, t, inter, s);
    });
  }
  {  // qk-norm-free RoPE + cache write, Llama-3-8B: 48 heads in, 32 q out, 16 kv heads cached
    const int t = 4096, qkv = 48 * 128;
    std::vector<int> pos(t), slots(t);
    std::iota(pos.begin(), pos.end(), 0);
    std::iota(slots.begin(), slots.end(), 0);
    int* d_pos = upload(pos);
    int* d_slots = upload(slots);
    std::vector<float> freq(64);
    for (int i = 0; i < 64; ++i) freq[i] = static_cast<float>(std::pow(500000.0, -i / 64.0));
    float* d_freq = upload(freq);
    const std::size_t set = static_cast<std::size_t>(t) * (qkv + 32 * 128 + 16 * 128);
    row("qkv_rope_cache", "4096 tok, 32/8x128", static_cast<std::size_t>(t) * (qkv + 48 * 128) * 2,
        set, [&](__half* p, cudaStream_t s) {
          QkvRopeCacheArgs a;
          a.qkv = p;
          a.q_out = p + static_cast<std::size_t>(t) * qkv;
          a.q_out_stride = 32 * 128;
          a.k_cache = a.q_out + static_cast<std::size_t>(t) * 32 * 128;
          a.v_cache = a.k_cache + static_cast<std::size_t>(t) * 8 * 128;
          a.positions = d_pos;
          a.slot_mapping = d_slots;
          a.inv_freq = d_freq;
          a.num_tokens = t;
          a.num_heads = 32;
          a.num_kv_heads = 8;
          a.head_dim = 128;
          qkv_rope_cache(a, s);
        });
    std::vector<int> ids(t);
    for (int i = 0; i < t; ++i) ids[i] = (i * 7919) % 128256;
    int* d_ids = upload(ids);
    row("embedding", "4096 tok x4096", static_cast<std::size_t>(t) * hidden * 4,
        static_cast<std::size_t>(t) * hidden, [&](__half* p, cudaStream_t s) {
          embedding_gather(p, arena + arena_elems - 128256ull * hidden, d_ids, t, hidden, 0, 128256,
                           s);
        });
    for (void* p : {static_cast<void*>(d_pos), static_cast<void*>(d_slots),
                    static_cast<void*>(d_freq), static_cast<void*>(d_ids)}) {
      CUDA_CHECK(cudaFree(p));
    }
  }
  CUDA_CHECK(cudaFree(arena));
  CUDA_CHECK(cudaFree(weights));
}

// ---- sampler --------------------------------------------------------------------------------

void bench_sampler(Report& r) {
  r.add("| sampler: rows x vocab | mode | us per call |");
  r.add("|---|---|---|");
  const int vocab = 128256;
  for (const int rows : {1, 64, 256}) {
    const std::size_t n = static_cast<std::size_t>(rows) * vocab;
    const int sets = std::max(1, rotation(n * 4));
    float* logits = device_alloc<float>(n * sets);
    fill_float<<<1024, 256>>>(logits, n * sets, 11, 8.0f);
    CUDA_CHECK_LAUNCH();
    int* tok = device_alloc<int>(rows);
    float* lp = device_alloc<float>(rows);
    int* top_tok = device_alloc<int>(static_cast<std::size_t>(rows) * kSamplerMaxLogprobs);
    float* top_lp = device_alloc<float>(static_cast<std::size_t>(rows) * kSamplerMaxLogprobs);
    struct Mode {
      const char* name;
      SamplerRowParams p;
    };
    SamplerRowParams greedy, plain, nucleus, logprobs;
    greedy.temperature = 0.0f;
    nucleus.temperature = 0.7f, nucleus.top_p = 0.95f, nucleus.top_k = 50;
    logprobs.temperature = 0.7f, logprobs.top_p = 0.95f, logprobs.logprobs = 5;
    for (const Mode& m :
         {Mode{"greedy", greedy}, Mode{"T=1", plain}, Mode{"T=0.7 top_k=50 top_p=0.95", nucleus},
          Mode{"T=0.7 top_p=0.95 logprobs=5", logprobs}}) {
      SamplerRowParams* params = upload(std::vector<SamplerRowParams>(rows, m.p));
      const double us = time_us(std::max(sets, 4), [&](int i, cudaStream_t s) {
        SampleArgs a;
        a.logits = logits + static_cast<std::size_t>(i % sets) * n;
        a.logits_stride = vocab;
        a.vocab = vocab;
        a.rows = rows;
        a.params = params;
        a.out_tokens = tok;
        a.out_logprobs = lp;
        a.out_top_tokens = top_tok;
        a.out_top_logprobs = top_lp;
        sample(a, s);
      });
      r.add("| %d x %d | %s | %.1f |", rows, vocab, m.name, us);
      CUDA_CHECK(cudaFree(params));
    }
    for (void* p : {static_cast<void*>(logits), static_cast<void*>(tok), static_cast<void*>(lp),
                    static_cast<void*>(top_tok), static_cast<void*>(top_lp)}) {
      CUDA_CHECK(cudaFree(p));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (awqd::cuda::device_count() == 0) {
    std::fprintf(stderr, "bench_attention: no CUDA device\n");
    return 1;
  }
  // Usage: bench_attention [--decode-only | --decode-sweep] [OUT.md]; --decode-only: the decode
  // table alone, without the forced-split sweep; --decode-sweep: the decode table and the sweep.
  const char* out_path = nullptr;
  bool decode_only = false, sweep = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--decode-only") == 0) {
      decode_only = true, sweep = false;
    } else if (std::strcmp(argv[i], "--decode-sweep") == 0) {
      decode_only = true;
    } else if (argv[i][0] == '-') {
      std::fprintf(stderr, "usage: bench_attention [--decode-only | --decode-sweep] [OUT.md]\n");
      return 2;
    } else {
      out_path = argv[i];
    }
  }
  try {
    const auto info = awqd::cuda::device_info(0);
    Report r;
    const double hbm = copy_bandwidth_gbs();
    r.add("device: %s, %d SMs, sm_%d%d; device-to-device copy %.0f GB/s (read + write)",
          info.name.c_str(), info.multiprocessors, info.sm_major, info.sm_minor, hbm);
    r.add("%s", "");
    bench_decode(r, hbm, sweep);
    if (!decode_only) {
      r.add("%s", "");
      bench_prefill(r);
      r.add("%s", "");
      bench_ops(r, hbm);
      r.add("%s", "");
      bench_sampler(r);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    if (out_path != nullptr) {
      FILE* f = std::fopen(out_path, "w");
      if (f == nullptr) {
        std::fprintf(stderr, "bench_attention: cannot write %s\n", out_path);
        return 1;
      }
      for (const auto& l : r.lines) std::fprintf(f, "%s\n", l.c_str());
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
