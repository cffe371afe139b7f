// bench_awq_gemm: the AWQ W4A16 GEMM against cuBLASLt fp16 on Llama-3-8B's linear shapes, every
// M of issue 5, in one run on one GPU (results: docs/PERF.md). Not a test; never run by ctest.
//
// Method (as /work/.library/device/METHOD.md asks):
// - HBM bandwidth measured in the same run: a 1 GiB device-to-device copy, bytes read + written.
// - Each timing: warm-up calls, then a CUDA graph of `reps` back-to-back calls (reps chosen so a
//   replay lasts about 2 ms), replayed 7 times; the median replay / reps is the time of one call.
// - Weights are rotated through copies totalling > 256 MB (5x the H100's 50 MB L2), both the AWQ
//   weights and cuBLASLt's fp16 weights, so each call streams its weights from HBM. Activations
//   are not rotated: in a model they come straight from the previous kernel, usually from L2.
// - Random data everywhere (a hash on the GPU), never zeros.
// - Effective weight bandwidth = bytes of the repacked weight (int4 + scales + zeros) / time.
//
// Usage: bench_awq_gemm [--m 1,2,4,...] [--shapes qkv,o,gate_up,down,down_silu,KxN] [--group 128]
//                       [--csv FILE] [--sweep-csv FILE] [--no-sweep] [--sweep-pdl]
// Prints a table per shape (auto; auto without PDL; the tiled kernel alone; the Turing path;
// dequantize + cuBLASLt; for direct-x plans the same launches with the activations staged),
// then the sweep of forced tiles and split-K factors (tuning data: its
// best against auto, and every configuration; plain launches, or with --sweep-pdl launched as the
// engine launches them up to M = 64), and last a summary against the issue's targets.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/awq_gemm.cuh"
#include "kernels/cublaslt_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "tests/bench_util.cuh"

namespace {

using namespace awqd::cuda;
using namespace awqd::bench;

constexpr std::size_t kRotateBytes = std::size_t{256} << 20;
constexpr std::size_t kCublasWorkspace = std::size_t{32} << 20;


// ---- one Linear shape ----
struct LinearShape {
  std::string name;
  int K, N;
  // The engine's decode down projection: the input is SiLU(gate) * up of x [M, 2K], computed by
  // the stream kernel while it loads x (AwqGemmOptions::silu_mul_ld = 2K; M <= 16 only). cuBLASLt
  // still multiplies a plain [M, K] input (without the separate SiLU kernel it would need).
  bool silu = false;
};

struct Row {
  std::string shape;
  bool silu = false;  // a fused SiLU input: not in the summary (its cuBLASLt figure lacks the SiLU)
  int M = 0;
  AwqGemmPlan plan;
  double awq_us = 0, cublas_us = 0, pdl_us = NAN, l2_us = NAN, nocluster_us = NAN, staged_us = NAN,
         tiled_us = NAN, turing_us = NAN, dequant_us = NAN;
  double weight_gbs = 0, hbm_pct = 0, tflops = 0, speedup = 0;
};

struct SweepRow {
  std::string shape;
  int M;
  std::string config;  // tile/splits, or dequant chunk columns
  double us;
};

class ShapeBench {
 public:
  ShapeBench(const LinearShape& s, int G, int max_M, cudaStream_t stream)
      : shape_(s), G_(G), stream_(stream) {
    const std::size_t k_pad = (s.K + 63) / 64 * 64, n_pad = (s.N + 63) / 64 * 64;
    const std::size_t groups = k_pad / G;
    tiles_words_ = k_pad * n_pad / 8;
    scales_count_ = groups * n_pad;
    zeros_words_ = groups * (n_pad / 64) * 8;
    weight_bytes_ = awq_weight_bytes(s.K, s.N, G);
    copies_ = static_cast<int>(
        std::max<std::size_t>(2, (kRotateBytes + weight_bytes_ - 1) / weight_bytes_));
    const std::size_t w16_bytes = std::size_t{2} * s.K * s.N;
    copies16_ =
        static_cast<int>(std::max<std::size_t>(2, (kRotateBytes + w16_bytes - 1) / w16_bytes));
    std::uint32_t seed = 1;
    auto fill32 = [&](std::uint32_t* p, std::size_t n) {
      fill_u32<<<1024, 256, 0, stream>>>(p, n, seed++);
    };
    auto fill16 = [&](__half* p, std::size_t n, float lo, float hi) {
      fill_half<<<1024, 256, 0, stream>>>(p, n, seed++, lo, hi);
    };
    for (int c = 0; c < copies_; ++c) {
      AwqWeight w;
      w.K = s.K;
      w.N = s.N;
      w.group_size = G;
      auto* t = device_alloc<std::uint32_t>(tiles_words_);
      auto* sc = device_alloc<__half>(scales_count_);
      auto* z = device_alloc<std::uint32_t>(zeros_words_);
      fill32(t, tiles_words_);
      fill16(sc, scales_count_, 0.002f, 0.02f);
      fill32(z, zeros_words_);
      w.tiles = reinterpret_cast<const uint4*>(t);
      w.scales = sc;
      w.zeros = z;
      weights_.push_back(w);
    }
    for (int c = 0; c < copies16_; ++c) {
      __half* w16 = device_alloc<__half>(std::size_t{1} * s.K * s.N);
      fill16(w16, std::size_t{1} * s.K * s.N, -0.05f, 0.05f);
      weights16_.push_back(w16);
    }
    const std::size_t x_count = std::size_t{1} * max_M * s.K * (s.silu ? 2 : 1);
    x_ = device_alloc<__half>(x_count);
    fill16(x_, x_count, -1.0f, 1.0f);
    y_ = device_alloc<__half>(std::size_t{1} * max_M * s.N);
    ws_.bytes = awq_gemm_workspace_bytes(max_M, s.K, s.N, G);
    ws_.ptr = device_alloc<char>(ws_.bytes);
    CUDA_CHECK(cudaMemset(ws_.ptr, 0, ws_.bytes));
    cublas_ws_ = device_alloc<char>(kCublasWorkspace);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  ~ShapeBench() {
    for (const AwqWeight& w : weights_) {
      cudaFree(const_cast<uint4*>(w.tiles));
      cudaFree(const_cast<__half*>(w.scales));
      cudaFree(const_cast<std::uint32_t*>(w.zeros));
    }
    for (__half* w : weights16_) cudaFree(w);
    cudaFree(x_);
    cudaFree(y_);
    cudaFree(ws_.ptr);
    cudaFree(cublas_ws_);
  }

  std::size_t weight_bytes() const { return weight_bytes_; }
  const AwqWeight& weight() const { return weights_[0]; }
  AwqWorkspace workspace() const { return ws_; }

  // Times awq_gemm with options o. Should a launch or capture with Programmatic Dependent
  // Launch fail, says so once and times everything without it from then on (the run still gives
  // the other numbers; test_awq_gemm reports the failure itself).
  // `rotate` false: every call reads weight copy 0, which stays in L2 when it fits (the ceiling
  // of prefetching a weight into L2 before its GEMM; not a figure of the kernel).
  double awq(int M, AwqGemmOptions o, AwqGemmPlan* plan = nullptr, bool rotate = true) {
    if (!pdl_usable) o.pdl = false;
    if (shape_.silu) o.silu_mul_ld = 2 * shape_.K;
    const int copies = rotate ? copies_ : 1;
    auto run = [&] {
      if (plan != nullptr) *plan = awq_gemm_plan(M, weights_[0], ws_, o);
      return time_us(stream_, [&](int i) {
        awq_gemm(x_, weights_[i % copies], nullptr, y_, M, ws_, stream_, o);
      });
    };
    if (!o.pdl) return run();
    try {
      return run();
    } catch (const std::exception& e) {
      std::printf("# WARNING: a call with Programmatic Dependent Launch failed (%s); timing "
                  "without it from here on\n",
                  e.what());
      pdl_usable = false;
      o.pdl = false;
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      return run();
    }
  }

  static inline bool pdl_usable = true;

  double cublas(int M) {
    return time_us(stream_, [&](int i) {
      cublaslt_gemm_f16(x_, shape_.K, weights16_[i % copies16_], shape_.N, nullptr, y_, shape_.N, M,
                        shape_.N, shape_.K, cublas_ws_, kCublasWorkspace, stream_);
    });
  }

  double dequantize_only() {
    __half* out = weights16_[0];  // K x N fp16: the chunk the dequant path writes, in one piece
    const int n = shape_.N / 64 * 64;
    return time_us(stream_, [&](int i) {
      awq_dequantize_f16(weights_[i % copies_], 0, n, out, shape_.N, stream_);
    });
  }

 private:
  LinearShape shape_;
  int G_;
  cudaStream_t stream_;
  std::size_t tiles_words_ = 0, scales_count_ = 0, zeros_words_ = 0, weight_bytes_ = 0;
  int copies_ = 0, copies16_ = 0;
  std::vector<AwqWeight> weights_;
  std::vector<__half*> weights16_;
  __half* x_ = nullptr;
  __half* y_ = nullptr;
  AwqWorkspace ws_;
  void* cublas_ws_ = nullptr;
};

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::stoi(item));
  return v;
}

std::vector<std::string> parse_strings(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(item);
  return v;
}

// The tiled kernel's tile for M (what auto ran before the stream kernel took M <= 16).
AwqTile tiled_tile_for(int M) {
  if (M <= 16) return AwqTile::kS16;
  if (M <= 32) return AwqTile::kS32;
  if (M <= 64) return AwqTile::kM64;
  return AwqTile::kL128;
}

// The issue's speed-up targets over cuBLASLt fp16 (H100).
double target_for(int M) {
  if (M <= 16) return 3.3;
  if (M == 64) return 1.8;
  if (M == 256) return 1.0;
  if (M >= 1024) return 0.9;
  return 0.0;  // no target
}

// A shape given as KxN (e.g. a tensor-parallel shard: o_proj at TP = 2 is 2048x4096), named as
// given.
bool parse_shape(const std::string& text, LinearShape& s) {
  const std::size_t x = text.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == text.size()) return false;
  try {
    std::size_t used_k = 0, used_n = 0;
    const int K = std::stoi(text.substr(0, x), &used_k);
    const int N = std::stoi(text.substr(x + 1), &used_n);
    if (used_k != x || used_n != text.size() - x - 1 || K <= 0 || N <= 0) return false;
    s = {text, K, N};
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ms = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
  std::vector<std::string> shape_names = {"qkv", "o", "gate_up", "down"};
  int G = 128;
  std::string csv_path, sweep_path;
  bool sweep = true, sweep_pdl = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_awq_gemm: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--m")
      ms = parse_ints(next());
    else if (a == "--shapes")
      shape_names = parse_strings(next());
    else if (a == "--group")
      G = std::stoi(next());
    else if (a == "--csv")
      csv_path = next();
    else if (a == "--sweep-csv")
      sweep_path = next();
    else if (a == "--no-sweep")
      sweep = false;
    else if (a == "--sweep-pdl")
      sweep_pdl = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_awq_gemm [--m 1,2,...] [--shapes qkv,o,gate_up,down,down_silu,KxN]"
                   " [--group G] [--csv FILE] [--sweep-csv FILE] [--no-sweep] [--sweep-pdl]\n");
      return 2;
    }
  }
  const std::map<std::string, LinearShape> known = {
      {"qkv", {"qkv", 4096, 6144}},
      {"o", {"o", 4096, 4096}},
      {"gate_up", {"gate_up", 4096, 28672}},
      {"down", {"down", 14336, 4096}},
      {"down_silu", {"down_silu", 14336, 4096, true}},
  };

  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const bool has_tc = prop.major >= 8;
    const double hbm = measure_hbm_gbs(stream);
    std::printf("# %s, sm_%d%d, %d SMs, L2 %d MB; measured D2D copy bandwidth %.0f GB/s; G=%d\n",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize >> 20,
                hbm, G);
    const int max_M = *std::max_element(ms.begin(), ms.end());
    std::vector<Row> rows;
    std::vector<SweepRow> sweep_rows;

    for (const std::string& name : shape_names) {
      const auto it = known.find(name);
      LinearShape s;
      if (it != known.end()) {
        s = it->second;
      } else if (!parse_shape(name, s)) {
        std::fprintf(stderr, "bench_awq_gemm: unknown shape %s (a name, or KxN: 2048x4096)\n",
                     name.c_str());
        return 2;
      }
      ShapeBench bench(s, G, std::max(max_M, 1024), stream);  // room for the forced dequant path
      const double deq_us = bench.dequantize_only();
      std::printf(
          "\n## %s: K=%d N=%d, AWQ weight %.1f MB (fp16 %.1f MB); dequantize alone %.1f us\n",
          s.name.c_str(), s.K, s.N, bench.weight_bytes() / 1e6, 2.0 * s.K * s.N / 1e6, deq_us);
      std::printf("%6s %-30s %9s %8s %6s %8s %9s %8s | %9s %9s %9s %9s %9s %9s %9s\n", "M",
                  "auto plan", "awq_us", "GB/s", "%HBM", "TFLOP/s", "cublas_us", "speedup",
                  "pdl_us", "pdl_l2hot", "pdl_nocl", "tiled_us", "turing_us", "deq_us", "pdl_stage");
      for (int M : ms) {
        if (s.silu && M > 16) {  // the fused SiLU input is the stream kernel's only
          std::printf("%6d (skipped: a fused SiLU input needs M <= 16)\n", M);
          continue;
        }
        Row r;
        r.shape = s.name;
        r.silu = s.silu;
        r.M = M;
        r.awq_us = bench.awq(M, AwqGemmOptions{}, &r.plan);
        r.cublas_us = bench.cublas(M);
        AwqGemmOptions o;
        o.pdl = true;  // auto with Programmatic Dependent Launch (off by default)
        r.pdl_us = bench.awq(M, o);
        r.l2_us = bench.awq(M, o, nullptr, /*rotate=*/false);
        o.cluster_reduce = false;  // the same, split-K through the workspace (sm_90 clusters off)
        r.nocluster_us = bench.awq(M, o);
        o.cluster_reduce = true;
        if (r.plan.direct_x) {  // the same launches with the activations staged by the block
          o.direct_x = false;
          r.staged_us = bench.awq(M, o);
          o.direct_x = true;
        }
        o.pdl = false;
        if (has_tc && !s.silu) {  // the tiled kernel alone (what auto ran before the stream kernel)
          o.path = AwqGemmPath::kTensorCore;
          o.tile = tiled_tile_for(M);
          r.tiled_us = bench.awq(M, o);
          o.tile = AwqTile::kAuto;
        }
        o.path = AwqGemmPath::kTuring;
        r.turing_us = bench.awq(M, o);
        if (M >= 64 && !s.silu) {
          o.path = AwqGemmPath::kDequantCublas;
          r.dequant_us = bench.awq(M, o);
        }
        r.weight_gbs = bench.weight_bytes() / r.awq_us / 1e3;
        r.hbm_pct = 100.0 * r.weight_gbs / hbm;
        r.tflops = 2.0 * M * s.K * s.N / r.awq_us / 1e6;
        r.speedup = r.cublas_us / r.awq_us;
        char plan[64];
        if (r.plan.path == AwqGemmPath::kDequantCublas)
          std::snprintf(plan, sizeof(plan), "dequant/chunk%d", r.plan.chunk_cols);
        else
          std::snprintf(plan, sizeof(plan), "%s/%s/s%d%s%s%s", awq_gemm_path_name(r.plan.path),
                        awq_tile_name(r.plan.tile), r.plan.splits, r.plan.pdl ? "/pdl" : "",
                        r.plan.cluster ? "/cluster" : "", r.plan.direct_x ? "/dx" : "");
        std::printf(
            "%6d %-30s %9.2f %8.0f %6.1f %8.1f %9.2f %8.2f | %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f\n",
            M, plan, r.awq_us, r.weight_gbs, r.hbm_pct, r.tflops, r.cublas_us, r.speedup,
            r.pdl_us, r.l2_us, r.nocluster_us, r.tiled_us, r.turing_us, r.dequant_us, r.staged_us);
        std::fflush(stdout);
        rows.push_back(r);

        if (sweep && !s.silu) {
          // Tuning data: the split-K model of the stream kernel (M <= 16), the tiles at mid M.
          std::vector<AwqTile> tiles;
          std::vector<int> split_counts;
          if (M <= 16) {
            // M = 9-16 also as st8 / st8w m-blocks of 8 rows (their per-lane variant from 5).
            tiles = {AwqTile::kSt8, AwqTile::kSt8w, AwqTile::kW64};
            if (M > 8) tiles.push_back(AwqTile::kSt16);
            split_counts = {1, 2, 4, 8, 16};
          } else if (M <= 64) {
            tiles = {AwqTile::kS32, AwqTile::kM64, AwqTile::kW64};
            split_counts = {1, 2, 4, 8};
          } else if (M <= 1024) {
            tiles = {AwqTile::kM64, AwqTile::kL128, AwqTile::kW64, AwqTile::kW128};
            split_counts = {1, 2, 4};
          } else {
            tiles = {AwqTile::kW128};
            split_counts = {1};
          }
          std::map<std::string, bool> seen;
          for (AwqTile tile : tiles)
            for (int splits : split_counts) {
              AwqGemmOptions so;
              so.path = has_tc ? AwqGemmPath::kTensorCore : AwqGemmPath::kTuring;
              so.tile = tile;
              so.splits = splits;
              so.pdl = sweep_pdl;
              AwqGemmPlan sp;
              try {
                sp = awq_gemm_plan(M, bench.weight(), bench.workspace(), so);
              } catch (const std::invalid_argument&) {
                continue;  // a tile this GPU or build lacks (the Hopper ones)
              }
              const std::string config =
                  std::string(awq_tile_name(tile)) + "/s" + std::to_string(sp.splits);
              if (seen[config]) continue;  // a count below the kernel's minimum ran already
              seen[config] = true;
              sweep_rows.push_back({s.name, M, config, bench.awq(M, so)});
            }
        }
        if (sweep && M >= 1024) {
          for (int chunk : {1024, 2048, 4096, 8192, 1 << 20}) {
            AwqGemmOptions so;
            so.path = AwqGemmPath::kDequantCublas;
            so.dequant_chunk_cols = chunk;
            AwqGemmPlan sp;
            const double us = bench.awq(M, so, &sp);
            sweep_rows.push_back({s.name, M, "chunk" + std::to_string(sp.chunk_cols), us});
          }
        }
      }
    }

    if (!csv_path.empty()) {
      std::ofstream f(csv_path);
      f << "shape,M,path,tile,splits,pdl,awq_us,weight_gbs,hbm_pct,tflops,cublas_us,speedup,"
           "pdl_us,pdl_l2hot_us,pdl_nocluster_us,tiled_us,turing_us,dequant_us,pdl_staged_us,hbm_gbs\n";
      for (const Row& r : rows)
        f << r.shape << ',' << r.M << ',' << awq_gemm_path_name(r.plan.path) << ','
          << awq_tile_name(r.plan.tile) << ',' << r.plan.splits << ',' << r.plan.pdl << ','
          << r.awq_us << ',' << r.weight_gbs << ',' << r.hbm_pct << ',' << r.tflops << ','
          << r.cublas_us << ',' << r.speedup << ',' << r.pdl_us << ',' << r.l2_us << ','
          << r.nocluster_us << ','
          << r.tiled_us << ',' << r.turing_us << ',' << r.dequant_us << ',' << r.staged_us << ','
          << hbm << '\n';
    }
    if (!sweep_rows.empty()) {
      if (!sweep_path.empty()) {
        std::ofstream f(sweep_path);
        f << "shape,M,config,us\n";
        for (const SweepRow& r : sweep_rows)
          f << r.shape << ',' << r.M << ',' << r.config << ',' << r.us << '\n';
      }
      std::printf(
          "\n## sweep%s: best forced tile/splits (dequant chunk for M >= 1024) vs auto\n"
          "%-8s %6s %-22s %10s %-14s %10s\n",
          sweep_pdl ? " (PDL launches)" : "", "shape", "M", "auto", "auto_us", "best", "best_us");
      for (const Row& r : rows) {
        const SweepRow* best = nullptr;
        for (const SweepRow& sr : sweep_rows)
          if (sr.shape == r.shape && sr.M == r.M && (best == nullptr || sr.us < best->us))
            best = &sr;
        if (best == nullptr) continue;
        char plan[48];
        std::snprintf(plan, sizeof(plan), "%s/s%d/c%d", awq_tile_name(r.plan.tile), r.plan.splits,
                      r.plan.chunk_cols);
        // With --sweep-pdl against auto's PDL time where it has one (M <= 64).
        const double auto_us = sweep_pdl && !std::isnan(r.pdl_us) ? r.pdl_us : r.awq_us;
        std::printf("%-8s %6d %-22s %10.2f %-14s %10.2f\n", r.shape.c_str(), r.M, plan, auto_us,
                    best->config.c_str(), best->us);
      }
      std::printf("\n## sweep: every forced configuration (us)\n");
      for (const Row& r : rows) {
        std::string line;
        for (const SweepRow& sr : sweep_rows)
          if (sr.shape == r.shape && sr.M == r.M) {
            char item[48];
            std::snprintf(item, sizeof(item), " %s=%.2f", sr.config.c_str(), sr.us);
            line += item;
          }
        if (!line.empty()) std::printf("%-8s %6d%s\n", r.shape.c_str(), r.M, line.c_str());
      }
    }

    std::printf(
        "\n## summary: speed-up of auto over cuBLASLt fp16 (min and geomean over shapes)\n");
    std::printf("%6s %8s %8s %8s %10s %s\n", "M", "min", "geomean", "target", "min %HBM",
                "verdict");
    for (int M : ms) {
      double lo = INFINITY, log_sum = 0, hbm_lo = INFINITY;
      int n = 0;
      for (const Row& r : rows)
        if (r.M == M && !r.silu) {
          lo = std::min(lo, r.speedup);
          hbm_lo = std::min(hbm_lo, r.hbm_pct);
          log_sum += std::log(r.speedup);
          ++n;
        }
      if (n == 0) continue;
      const double target = target_for(M);
      const char* verdict = target == 0 ? "-" : lo >= target ? "MET" : "MISSED";
      std::printf("%6d %8.2f %8.2f %8.1f %10.1f %s\n", M, lo, std::exp(log_sum / n), target, hbm_lo,
                  verdict);
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_awq_gemm: %s\n", e.what());
    return 1;
  }
  return 0;
}
