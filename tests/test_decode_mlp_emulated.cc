// The decode MLP kernel's real source (kernels/decode_mlp_kernel.cuh) run on the CPU through
// tests/emu/cuda_emulation.h with every block of the grid at once (emu::run_grid: the kernel's
// grid barriers need its blocks resident together), against the host reference of
// tests/decode_mlp_reference.h. Grids of 1-3 blocks of 4 warps deal the units so that warps hold
// no unit of a phase, part of one stripe, or units of up to three stripes, with rings of 2 and 3
// units per warp (the next units' weights requested across the grid barriers); two calls in a row
// reuse the counters and the barrier as the engine does. Runs in CI (no GPU); test_decode_mlp
// covers the launcher and the hardware.
#include <gtest/gtest.h>

#include "tests/emu/cuda_emulation.h"
// (the emulation must come first: it defines what the kernel header expects from CUDA)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/decode_mlp_kernel.cuh"
#include "tests/decode_mlp_reference.h"

namespace {

using awqd::half_bits;
using awqd::test::AwqReference;
using awqd::test::MlpReference;
namespace D = awqd::cuda::decode_mlp_detail;

D::Linear linear_of(const AwqReference& r, bool with_bias) {
  D::Linear l;
  l.tiles = reinterpret_cast<const uint4*>(r.packed.tiles.data());
  l.scales = reinterpret_cast<const __half*>(r.packed.scales.data());
  l.zeros = r.packed.zeros.data();
  l.bias = with_bias ? reinterpret_cast<const __half*>(r.bias.data()) : nullptr;
  l.stripes = r.N / 64;
  l.batches = r.K / 128;
  return l;
}

// Mirrors the launcher (kernels/decode_mlp.cu) over host buffers; returns "" or what failed.
std::string run_and_check(const MlpReference& r, int blocks, int warps, int slots, int calls) {
  const int W = blocks * warps;
  const int max_stripes = std::max({r.H, 2 * r.I}) / 64;
  std::vector<float> partials(static_cast<std::size_t>(max_stripes + W) * D::kPartialFloats, NAN);
  std::vector<float> sumsq(static_cast<std::size_t>(2) * (r.H / 64) * D::kMaxRows, NAN);
  std::vector<int> counters(r.H / 64 + r.I / 64 + r.H / 64, 0);
  std::vector<half_bits> act(static_cast<std::size_t>(D::kMaxRows) * r.I, 0x7E00);
  unsigned long long barrier = 0;
  std::string failure;
  for (int call = 0; call < calls; ++call) {
    std::vector<half_bits> residual = r.residual;
    std::vector<half_bits> out(static_cast<std::size_t>(r.M) * r.H, 0x7E00);  // NaN poison
    D::Params p{};
    p.w[0] = linear_of(r.o, r.with_bias);
    p.w[1] = linear_of(r.gate_up, r.with_bias);
    p.w[2] = linear_of(r.down, r.with_bias);
    p.attn = reinterpret_cast<const __half*>(r.attn.data());
    p.attn_ld = r.Ko;
    p.residual = reinterpret_cast<__half*>(residual.data());
    p.out = reinterpret_cast<__half*>(out.data());
    p.act = reinterpret_cast<__half*>(act.data());
    p.post_norm = reinterpret_cast<const __half*>(r.post_norm.data());
    p.next_norm = reinterpret_cast<const __half*>(r.next_norm.data());
    p.eps = r.eps;
    p.partials = partials.data();
    p.sumsq = sumsq.data();
    p.counters = counters.data();
    p.barrier = &barrier;
    p.M = r.M;
    p.H = r.H;
    p.I = r.I;
    D::with_variant(r.M, slots, [&](auto rows, auto ring) {
      emu::run_grid(warps * 32, static_cast<unsigned>(blocks),
                    [&] { D::decode_mlp_block<decltype(rows)::value, decltype(ring)::value>(p); });
    });
    const std::string f = awqd::test::check_mlp_output(r, residual.data(), out.data());
    if (!f.empty()) failure += "call " + std::to_string(call) + ": " + f;
  }
  if (!std::all_of(counters.begin(), counters.end(), [](int c) { return c == 0; }))
    failure += "stripe counters not reset; ";
  if (barrier != static_cast<unsigned long long>(calls) * 3 * blocks)
    failure += "barrier arrivals " + std::to_string(barrier) + "; ";
  return failure;
}

struct Case {
  int M, Ko, H, I, blocks, warps;
  bool bias;
};

TEST(DecodeMlpEmulated, MatchesReference) {
  const Case cases[] = {
      // 12 warps: o's 8 units leave warps idle, gate_up 2 units each, down 1.
      {1, 256, 256, 384, 3, 4, false},
      {5, 256, 256, 384, 3, 4, true},
      // 8 warps: gate_up ranges of 3 units cross stripes.
      {8, 256, 256, 384, 2, 4, false},
      // 4 warps: ranges of 6 units span 3 stripes; o's K differs from H (q_size != hidden).
      {3, 384, 256, 384, 1, 4, true},
      {2, 128, 256, 640, 2, 4, false},
  };
  for (const Case& c : cases) {
    const MlpReference r = awqd::test::make_mlp_reference(c.M, c.Ko, c.H, c.I, c.bias);
    for (int slots : {2, 3}) {
      const std::string failure = run_and_check(r, c.blocks, c.warps, slots, 2);
      EXPECT_TRUE(failure.empty()) << "M=" << c.M << " Ko=" << c.Ko << " H=" << c.H << " I=" << c.I
                                   << " blocks=" << c.blocks << " warps=" << c.warps << " slots=" << slots
                                   << " bias=" << c.bias << ": " << failure;
    }
  }
}

}  // namespace
