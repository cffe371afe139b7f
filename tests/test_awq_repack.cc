// awq_repack (host code, runs in CI without a GPU): the repacked tensors hold every weight, zero
// point and scale of the checkpoint exactly where the GEMM kernels read them.
//
// The expected positions are derived here from the PTX fragment layouts and the kernel's decode
// steps, not from awq_layout.cuh's formulas, so a wrong layout formula fails this test:
//   mma.m16n8k16 B fragment of lane (g = lane/4, t = lane%4): register b01 holds k = 2t, 2t+1,
//   register b23 holds k = 2t+8, 2t+9, both of column n = g of its n8 tile.
//   The kernel decodes word j of a lane with (w >> 4a) & 0x000F000F, a = 0..3: the low half is
//   nibble a, the high half nibble a+4 (k and k+1); a = 0, 1 give b01, b23 of n8-tile 2j, a = 2, 3
//   those of n8-tile 2j+1. Scales/zeros: lane g reads 8 values, value i for n8-tile i.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "engine/awq.h"
#include "kernels/awq_gemm.cuh"

namespace {

using awqd::cuda::AwqPackedWeight;

struct Checkpoint {
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<std::uint16_t> scales;
};

Checkpoint random_checkpoint(int K, int N, int G, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Checkpoint c;
  c.qweight.resize(static_cast<std::size_t>(K) * N / 8);
  c.qzeros.resize(static_cast<std::size_t>(K / G) * N / 8);
  c.scales.resize(static_cast<std::size_t>(K / G) * N);
  for (auto& w : c.qweight) w = static_cast<std::int32_t>(rng());
  for (auto& z : c.qzeros) z = static_cast<std::int32_t>(rng());
  std::uniform_real_distribution<float> scale(1e-3f, 0.1f);
  for (auto& s : c.scales) s = awqd::float_to_half(scale(rng));
  return c;
}

void expect_repack_exact(int K, int N, int G) {
  SCOPED_TRACE("K=" + std::to_string(K) + " N=" + std::to_string(N) + " G=" + std::to_string(G));
  const Checkpoint c = random_checkpoint(K, N, G, static_cast<std::uint32_t>(K * 131 + N * 7 + G));
  const AwqPackedWeight p =
      awqd::cuda::awq_repack(c.qweight.data(), c.qzeros.data(), c.scales.data(), K, N, G);
  ASSERT_EQ(p.k_pad % 64, 0);
  ASSERT_EQ(p.n_pad % 64, 0);
  ASSERT_GE(p.k_pad, K);
  ASSERT_LT(p.k_pad - K, 64);
  ASSERT_GE(p.n_pad, N);
  ASSERT_LT(p.n_pad - N, 64);
  const std::vector<std::uint8_t> q = awqd::awq_unpack_all(c.qweight.data(), K, N);
  const std::vector<std::uint8_t> z = awqd::awq_unpack_all(c.qzeros.data(), K / G, N);
  const int stripes = p.n_pad / 64, tiles = p.k_pad / 16, groups = p.k_pad / G;
  ASSERT_EQ(p.tiles.size(), static_cast<std::size_t>(stripes) * tiles * 32 * 4);
  ASSERT_EQ(p.scales.size(), static_cast<std::size_t>(stripes) * groups * 64);
  ASSERT_EQ(p.zeros.size(), static_cast<std::size_t>(stripes) * groups * 8);

  std::vector<std::uint8_t> seen(static_cast<std::size_t>(p.k_pad) * p.n_pad, 0);
  int mismatches = 0;
  for (int s = 0; s < stripes; ++s)
    for (int tile = 0; tile < tiles; ++tile)
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int j = 0; j < 4; ++j) {
          const std::uint32_t w =
              p.tiles[((static_cast<std::size_t>(s) * tiles + tile) * 32 + lane) * 4 + j];
          for (int a = 0; a < 4; ++a)
            for (int half = 0; half < 2; ++half) {
              const std::uint32_t value = (w >> (4 * a + 16 * half)) & 0xFu;
              const int n8_tile = 2 * j + a / 2;
              const int k = tile * 16 + 2 * t + 8 * (a % 2) + half;
              const int n = s * 64 + 8 * n8_tile + g;
              ++seen[static_cast<std::size_t>(k) * p.n_pad + n];
              const std::uint32_t want =
                  k < K && n < N ? q[static_cast<std::size_t>(k) * N + n] : 0u;
              if (value != want && ++mismatches <= 5)
                ADD_FAILURE() << "weight (k=" << k << ", n=" << n << "): repacked " << value
                              << ", checkpoint " << want;
            }
        }
      }
  EXPECT_EQ(mismatches, 0);
  for (std::size_t i = 0; i < seen.size(); ++i)
    ASSERT_EQ(seen[i], 1) << "position k=" << i / p.n_pad << " n=" << i % p.n_pad << " decoded "
                          << int(seen[i]) << " times";

  mismatches = 0;
  for (int s = 0; s < stripes; ++s)
    for (int grp = 0; grp < groups; ++grp)
      for (int g = 0; g < 8; ++g)
        for (int i = 0; i < 8; ++i) {
          const int n = s * 64 + 8 * i + g;
          const bool real = grp < K / G && n < N;
          const std::size_t sg = static_cast<std::size_t>(s) * groups + grp;
          const std::uint16_t scale = p.scales[sg * 64 + g * 8 + i];
          const std::uint32_t zero = (p.zeros[sg * 8 + g] >> (4 * i)) & 0xFu;
          const std::uint16_t want_scale =
              real ? c.scales[static_cast<std::size_t>(grp) * N + n] : 0;
          const std::uint32_t want_zero = real ? z[static_cast<std::size_t>(grp) * N + n] : 0u;
          if ((scale != want_scale || zero != want_zero) && ++mismatches <= 5)
            ADD_FAILURE() << "group " << grp << " column " << n << ": scale " << scale << " zero "
                          << zero << ", checkpoint " << want_scale << " " << want_zero;
        }
  EXPECT_EQ(mismatches, 0);
}

TEST(AwqRepack, EveryValueLandsWhereTheKernelReadsIt) {
  expect_repack_exact(128, 64, 128);     // one stripe, two k-tiles
  expect_repack_exact(4768, 200, 32);    // K % 64 == 32 (a padded group), N % 64 == 8
  expect_repack_exact(4864, 1408, 128);  // Llama-3 TP=3 row shard K, 11 heads of 128 columns
  expect_repack_exact(192, 72, 64);
  expect_repack_exact(32, 8, 32);  // smallest shape
}

TEST(AwqRepack, LargeTensorsUseThreadsAndGiveTheSameResult) {
  // 4096 x 2048 crosses the threading threshold; compare with a column subset packed alone.
  const int K = 4096, N = 2048, G = 128;
  const Checkpoint c = random_checkpoint(K, N, G, 7);
  const AwqPackedWeight p =
      awqd::cuda::awq_repack(c.qweight.data(), c.qzeros.data(), c.scales.data(), K, N, G);
  // The first 64 columns as their own checkpoint: its one stripe must equal stripe 0.
  Checkpoint first;
  for (int k = 0; k < K; ++k)
    for (int w = 0; w < 8; ++w)
      first.qweight.push_back(c.qweight[static_cast<std::size_t>(k) * (N / 8) + w]);
  for (int g = 0; g < K / G; ++g) {
    for (int w = 0; w < 8; ++w)
      first.qzeros.push_back(c.qzeros[static_cast<std::size_t>(g) * (N / 8) + w]);
    for (int n = 0; n < 64; ++n)
      first.scales.push_back(c.scales[static_cast<std::size_t>(g) * N + n]);
  }
  const AwqPackedWeight q = awqd::cuda::awq_repack(first.qweight.data(), first.qzeros.data(),
                                                   first.scales.data(), K, 64, G);
  ASSERT_EQ(q.tiles.size() * 32, p.tiles.size());
  for (std::size_t i = 0; i < q.tiles.size(); ++i) ASSERT_EQ(q.tiles[i], p.tiles[i]) << i;
  for (std::size_t i = 0; i < q.scales.size(); ++i) ASSERT_EQ(q.scales[i], p.scales[i]) << i;
  for (std::size_t i = 0; i < q.zeros.size(); ++i) ASSERT_EQ(q.zeros[i], p.zeros[i]) << i;
}

TEST(AwqRepack, RejectsUnsupportedShapes) {
  const std::vector<std::int32_t> words(4096, 0x12345678);
  const std::vector<std::uint16_t> scales(4096, 0x3c00);
  auto repack = [&](int K, int N, int G) {
    return awqd::cuda::awq_repack(words.data(), words.data(), scales.data(), K, N, G);
  };
  EXPECT_THROW(repack(64, 64, 16), std::invalid_argument);  // group size
  EXPECT_THROW(repack(96, 64, 64), std::invalid_argument);  // K % G
  EXPECT_THROW(repack(64, 60, 32), std::invalid_argument);  // N % 8
  EXPECT_THROW(repack(0, 64, 32), std::invalid_argument);
  EXPECT_THROW(awqd::cuda::awq_repack(nullptr, words.data(), scales.data(), 64, 64, 32),
               std::invalid_argument);
  EXPECT_NO_THROW(repack(64, 64, 32));
}

TEST(AwqRepack, WeightBytesCountsWhatTheKernelsStream) {
  // Llama-3-8B o_proj, G = 128: 4096*4096/2 int4 + 32*4096*2 scales + 32*64*32 zeros.
  EXPECT_EQ(awqd::cuda::awq_weight_bytes(4096, 4096, 128),
            std::size_t{4096} * 4096 / 2 + 32 * 4096 * 2 + 32 * 64 * 32);
}

}  // namespace
