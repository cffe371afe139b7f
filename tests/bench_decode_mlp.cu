// bench_decode_mlp: a decoder layer's MLP half at decode sizes (M = 1, 2, 4, 8 rows), the decode
// MLP kernel (kernels/decode_mlp.cuh) against the separate kernels the engine otherwise runs
// (o_proj GEMM, add_rmsnorm, gate_up GEMM, down_proj GEMM with SiLU * up fused into its input,
// add_rmsnorm; all with Programmatic Dependent Launch, as in the engine). Not a test; never run
// by ctest. Results: docs/PERF.md.
//
// Method (METHOD.md): `layers` layers of distinct random AWQ weights (32 x 100 MB for Llama-3-8B,
// far beyond the 50-60 MB L2), one call per layer back to back in a CUDA graph, replayed 7
// times; the median replay / layers is the time of one layer's MLP half. The weight bandwidth is
// the repacked weights' bytes (int4 + scales + zeros) over that time, against the copy bandwidth
// measured in the same run. --trace: one replay with the middle layer's call writing per-block
// %globaltimer stamps, printed as the time from the first block's start to each point (median
// and last block).
//
// Usage: bench_decode_mlp [--shape llama3-8b|qwen2.5-7b] [--m 1,2,4,8] [--slots 3] [--layers 32]
//                         [--trace]   (--slots 2,3: the kernel with rings of 2 and of 3 units)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/awq_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/decode_mlp.cuh"
#include "kernels/norm.cuh"
#include "tests/bench_util.cuh"

namespace {

using namespace awqd::cuda;
using namespace awqd::bench;

struct DeviceAwq {
  AwqWeight w;
  std::size_t bytes = 0;
};

// Random repacked weights (any bit pattern is a valid int4 tile), scales ~ 1e-2, random zeros.
DeviceAwq random_awq(int K, int N, std::uint32_t seed) {
  DeviceAwq d;
  const std::size_t tile_words = static_cast<std::size_t>(K) * N / 8;
  const std::size_t groups = static_cast<std::size_t>(N / 64) * (K / 128);
  auto* tiles = device_alloc<std::uint32_t>(tile_words);
  auto* scales = device_alloc<__half>(groups * 64);
  auto* zeros = device_alloc<std::uint32_t>(groups * 8);
  fill_u32<<<1024, 256>>>(tiles, tile_words, seed);
  fill_half<<<256, 256>>>(scales, groups * 64, seed + 1, 0.002f, 0.02f);
  fill_u32<<<64, 256>>>(zeros, groups * 8, seed + 2);
  CUDA_CHECK(cudaGetLastError());
  d.w = {reinterpret_cast<const uint4*>(tiles), scales, zeros, K, N, 128};
  d.bytes = tile_words * 4 + groups * 64 * 2 + groups * 8 * 4;
  return d;
}

// Loads-only probe of the access order: every warp reads `per_warp` 4 KB units (8 x 512 bytes,
// one 16-byte load per lane each), two units in flight, nothing computed. contiguous = 1: warp w
// reads units w * per_warp .. (the decode MLP kernel's deal: the warps' streams lie ~per_warp x
// 4 KB apart); 0: unit w + k * warps (all warps read neighbouring units at once).
__global__ void probe_units(const uint4* p, int per_warp, int contiguous, std::uint32_t* sink) {
  const int warps = gridDim.x * (blockDim.x / 32), w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  std::uint32_t acc = 0;
  auto unit = [&](int k) { return contiguous ? static_cast<std::size_t>(w) * per_warp + k : w + static_cast<std::size_t>(k) * warps; };
  uint4 a[8], b[8];
  for (int s = 0; s < 8; ++s) a[s] = __ldg(p + unit(0) * 256 + s * 32 + lane);
  for (int k = 0; k < per_warp; ++k) {
    const bool more = k + 1 < per_warp;
    for (int s = 0; s < 8; ++s) b[s] = more ? __ldg(p + unit(k + 1) * 256 + s * 32 + lane) : make_uint4(0, 0, 0, 0);
    for (int s = 0; s < 8; ++s) acc ^= a[s].x ^ a[s].y ^ a[s].z ^ a[s].w;
    for (int s = 0; s < 8; ++s) a[s] = b[s];
  }
  if (acc == 0x12345678u) *sink = acc;
}

struct Layer {
  DeviceAwq o, gate_up, down;
  __half *post_norm = nullptr, *next_norm = nullptr;
};

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "llama3-8b";
  std::vector<int> ms = {1, 2, 4, 8};
  int layers = 32;
  bool trace = false;
  std::vector<int> slot_list = {0};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shape" && i + 1 < argc) shape = argv[++i];
    else if (a == "--m" && i + 1 < argc) ms = parse_list(argv[++i]);
    else if (a == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (a == "--trace") trace = true;
    else if (a == "--slots" && i + 1 < argc) slot_list = parse_list(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_decode_mlp [--shape llama3-8b|qwen2.5-7b] [--m 1,2,4,8] [--layers N] [--trace]\n");
      return 2;
    }
  }
  int Ko = 4096, H = 4096, I = 14336;
  if (shape == "qwen2.5-7b") Ko = 3584, H = 3584, I = 18944;
  else if (shape != "llama3-8b") {
    std::fprintf(stderr, "unknown shape %s\n", shape.c_str());
    return 2;
  }
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy_gbs = measure_hbm_gbs(stream), read_gbs = measure_read_gbs(stream);

  std::vector<Layer> L(layers);
  for (int l = 0; l < layers; ++l) {
    L[l].o = random_awq(Ko, H, 100 * l + 1);
    L[l].gate_up = random_awq(H, 2 * I, 100 * l + 11);
    L[l].down = random_awq(I, H, 100 * l + 21);
    L[l].post_norm = device_alloc<__half>(H);
    L[l].next_norm = device_alloc<__half>(H);
    fill_half<<<16, 256>>>(L[l].post_norm, H, 100 * l + 31, 0.5f, 1.5f);
    fill_half<<<16, 256>>>(L[l].next_norm, H, 100 * l + 41, 0.5f, 1.5f);
  }
  const std::size_t layer_bytes = L[0].o.bytes + L[0].gate_up.bytes + L[0].down.bytes;
  const int max_m = *std::max_element(ms.begin(), ms.end());
  __half* attn = device_alloc<__half>(static_cast<std::size_t>(max_m) * Ko);
  __half* residual = device_alloc<__half>(static_cast<std::size_t>(max_m) * H);
  __half* h = device_alloc<__half>(static_cast<std::size_t>(max_m) * H);
  __half* proj = device_alloc<__half>(static_cast<std::size_t>(max_m) * H);
  __half* gu = device_alloc<__half>(static_cast<std::size_t>(max_m) * 2 * I);
  fill_half<<<64, 256>>>(attn, static_cast<std::size_t>(max_m) * Ko, 7, -1.0f, 1.0f);
  fill_half<<<64, 256>>>(residual, static_cast<std::size_t>(max_m) * H, 8, -1.0f, 1.0f);
  const std::size_t mlp_ws_bytes = decode_mlp_workspace_bytes(L[0].o.w, L[0].gate_up.w, L[0].down.w);
  void* mlp_ws = device_alloc<char>(mlp_ws_bytes);
  decode_mlp_workspace_init(mlp_ws, mlp_ws_bytes, stream);
  std::size_t gemm_ws_bytes = 0;
  for (const AwqWeight* w : {&L[0].o.w, &L[0].gate_up.w, &L[0].down.w})
    gemm_ws_bytes = std::max(gemm_ws_bytes, awq_gemm_workspace_bytes(max_m, w->K, w->N, 128));
  void* gemm_ws = device_alloc<char>(gemm_ws_bytes);
  awq_gemm_workspace_init({gemm_ws, gemm_ws_bytes}, stream);
  const int blocks = decode_mlp_blocks(0), points = decode_mlp_trace_points();
  unsigned long long* trace_buf = device_alloc<unsigned long long>(static_cast<std::size_t>(blocks) * points);
  CUDA_CHECK(cudaDeviceSynchronize());
  const float eps = 1e-5f;

  int experiment = 0;
  auto fused = [&](int l, int M, unsigned long long* tr, int slots) {
    DecodeMlpArgs a;
    a.o = L[l].o.w;
    a.gate_up = L[l].gate_up.w;
    a.down = L[l].down.w;
    a.attn = attn;
    a.attn_ld = Ko;
    a.residual = residual;
    a.out = h;
    a.post_norm = L[l].post_norm;
    a.next_norm = L[l].next_norm;
    a.eps = eps;
    a.M = M;
    a.pdl = true;
    a.workspace = mlp_ws;
    a.workspace_bytes = mlp_ws_bytes;
    a.trace = tr;
    a.ring_slots = slots;
    a.experiment = experiment;
    decode_mlp(a, stream);
  };
  auto separate = [&](int l, int M) {
    AwqGemmOptions opt;
    opt.pdl = true;
    const AwqWorkspace ws{gemm_ws, gemm_ws_bytes};
    awq_gemm(attn, L[l].o.w, nullptr, proj, M, ws, stream, opt);
    add_rmsnorm(h, residual, proj, L[l].post_norm, M, H, eps, stream);
    awq_gemm(h, L[l].gate_up.w, nullptr, gu, M, ws, stream, opt);
    AwqGemmOptions down = opt;
    down.silu_mul_ld = 2 * I;
    awq_gemm(gu, L[l].down.w, nullptr, proj, M, ws, stream, down);
    add_rmsnorm(h, residual, proj, L[l].next_norm, M, H, eps, stream);
  };

  std::printf("# bench_decode_mlp: %s (Ko %d, H %d, I %d), %d layers of %.1f MB of AWQ weights, %s (%d SMs), "
              "copy bandwidth %.0f GB/s, read-only stream %.0f GB/s\n",
              shape.c_str(), Ko, H, I, layers, layer_bytes / 1e6, prop.name, prop.multiProcessorCount, copy_gbs, read_gbs);
  std::printf("| M | ring | fused us | separate us | speed-up | fused GB/s | %% of copy | separate GB/s |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (int M : ms) {
    const double s_us = time_us(stream, [&](int i) { separate(i % layers, M); });
    for (int slots : slot_list) {
      const double f_us = time_us(stream, [&](int i) { fused(i % layers, M, nullptr, slots); });
      std::printf("| %d | %s | %.2f | %.2f | %.3fx | %.0f | %.0f | %.0f |\n", M,
                  slots == 0 ? "default" : std::to_string(slots).c_str(), f_us, s_us, s_us / f_us,
                  layer_bytes / f_us / 1e3, 100.0 * layer_bytes / f_us / 1e3 / copy_gbs, layer_bytes / s_us / 1e3);
      std::fflush(stdout);
    }
  }
  {
    // Loads-only probes over gate_up-sized regions (6 units per warp of 132 x 16 warps), rotated
    // through the layers' tile buffers so nothing comes from L2.
    std::uint32_t* sink = device_alloc<std::uint32_t>(1);
    const int per_warp = 6;  // 2112 warps x 6 x 4 KB = 52 MB, inside gate_up's 58.7 MB of tiles
    for (int contiguous : {1, 0}) {
      const double us = time_us(stream, [&](int i) {
        probe_units<<<blocks, 512, 0, stream>>>(L[i % layers].gate_up.w.tiles, per_warp, contiguous, sink);
      });
      const double bytes = static_cast<double>(blocks) * 16 * per_warp * 4096;
      std::printf("probe %s: %.1f MB in %.2f us = %.0f GB/s\n", contiguous ? "contiguous ranges per warp" : "round-robin units",
                  bytes / 1e6, us, bytes / us / 1e3);
    }
  }
  if (std::getenv("AWQD_MLP_EXPERIMENTS") != nullptr) {
    // What the kernel's phases cost without parts of their work (garbage results): 1 no
    // dequantization or mma, 2 no split-K join, 3 neither.
    for (int M : ms)
      for (int e : {1, 2, 3}) {
        experiment = e;
        const double us = time_us(stream, [&](int i) { fused(i % layers, M, nullptr, slot_list[0]); });
        std::printf("experiment %d (%s), M = %d: %.2f us\n", e,
                    e == 1 ? "no dequant/mma" : e == 2 ? "no split-K join" : "neither", M, us);
      }
    experiment = 0;
  }
  if (trace) {
    // The middle layer of a chain of fused calls writes its stamps.
    for (int M : ms) {
      CUDA_CHECK(cudaMemset(trace_buf, 0, static_cast<std::size_t>(blocks) * points * 8));
      for (int rep = 0; rep < 2; ++rep)
        for (int l = 0; l < layers; ++l) fused(l, M, rep == 1 && l == layers / 2 ? trace_buf : nullptr, slot_list[0]);
      CUDA_CHECK(cudaStreamSynchronize(stream));
      std::vector<unsigned long long> t(static_cast<std::size_t>(blocks) * points);
      CUDA_CHECK(cudaMemcpy(t.data(), trace_buf, t.size() * 8, cudaMemcpyDeviceToHost));
      unsigned long long t0 = ~0ull;
      for (int b = 0; b < blocks; ++b) t0 = std::min(t0, t[static_cast<std::size_t>(b) * points]);
      const char* names[] = {"start", "after PDL wait", "o_proj arrive", "o_proj release", "gate_up arrive",
                             "gate_up release", "down arrive", "down release"};
      std::printf("\ntrace M = %d (us from the first block's start; median / last block):\n", M);
      for (int k = 0; k < points && k < 8; ++k) {
        std::vector<double> v;
        for (int b = 0; b < blocks; ++b) v.push_back((t[static_cast<std::size_t>(b) * points + k] - t0) / 1e3);
        std::sort(v.begin(), v.end());
        std::printf("  %-16s %7.2f / %7.2f\n", names[k], v[v.size() / 2], v.back());
      }
    }
  }
  return 0;
}
