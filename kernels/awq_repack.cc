// awq_repack: AWQ GEMM checkpoint tensors -> the tile layout of kernels/awq_layout.cuh (host).
// Each output word gathers its 8 nibbles from qweight by the layout's tile_pos(); stripes are
// independent, so large tensors are split over threads by stripe.
#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include "kernels/awq_gemm.cuh"
#include "kernels/awq_layout.cuh"

namespace awqd::cuda {
namespace {

namespace L = awq_layout;

// Logical column j (0..7) of an AWQ-packed word sits at nibble kAwqNibble[j] (SPEC section 2).
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

inline std::uint32_t awq_value(const std::int32_t* packed, int row, int col, int cols) {
  const auto word =
      static_cast<std::uint32_t>(packed[static_cast<std::size_t>(row) * (cols / 8) + col / 8]);
  return (word >> (4 * kAwqNibble[col % 8])) & 0xFu;
}

void check_shape(int K, int N, int G) {
  if (G != 32 && G != 64 && G != 128)
    throw std::invalid_argument("awq_repack: group size " + std::to_string(G) +
                                " is not supported (32, 64 or 128)");
  if (K <= 0 || N <= 0 || K % G != 0)
    throw std::invalid_argument("awq_repack: K=" + std::to_string(K) +
                                " must be a positive multiple of the group size " +
                                std::to_string(G));
  if (N % 8 != 0)
    throw std::invalid_argument("awq_repack: N=" + std::to_string(N) +
                                " must be a positive multiple of 8");
  if (static_cast<long long>(L::pad_k(K)) * L::pad_n(N) / 2 > (1ll << 31))
    throw std::invalid_argument("awq_repack: K*N too large (more than 2 GiB of int4)");
}

void repack_stripes(const std::int32_t* qweight, const std::int32_t* qzeros,
                    const std::uint16_t* scales, AwqPackedWeight& out, int stripe_begin,
                    int stripe_end) {
  const int K = out.K, N = out.N, G = out.group_size, k_pad = out.k_pad;
  const int tiles_per_stripe = k_pad / L::kTileRows;
  const int groups = k_pad / G;
  const int real_groups = K / G;
  for (int s = stripe_begin; s < stripe_end; ++s) {
    const int n0 = s * L::kStripeCols;
    for (int tile = 0; tile < tiles_per_stripe; ++tile) {
      const int k0 = tile * L::kTileRows;
      for (int lane = 0; lane < 32; ++lane) {
        for (int word = 0; word < 4; ++word) {
          std::uint32_t packed = 0;
          for (int nibble = 0; nibble < 8; ++nibble) {
            const L::TilePos pos = L::tile_pos(lane, word, nibble);
            const int k = k0 + pos.k, n = n0 + pos.n;
            if (k < K && n < N) packed |= awq_value(qweight, k, n, N) << (4 * nibble);
          }
          out.tiles[L::tile_word_index(s, tile, lane, word, k_pad)] = packed;
        }
      }
    }
    for (int group = 0; group < groups; ++group) {
      for (int c = 0; c < L::kStripeCols; ++c) {
        const int n = n0 + c;
        const bool real = group < real_groups && n < N;
        out.scales[L::scale_index(s, group, c, groups)] =
            real ? scales[static_cast<std::size_t>(group) * N + n] : std::uint16_t{0};
        if (real)
          out.zeros[L::zero_word_index(s, group, c, groups)] |= awq_value(qzeros, group, n, N)
                                                                << (4 * L::zero_nibble(c));
      }
    }
  }
}

}  // namespace

AwqPackedWeight awq_repack(const std::int32_t* qweight, const std::int32_t* qzeros,
                           const std::uint16_t* scales, int K, int N, int group_size) {
  check_shape(K, N, group_size);
  if (qweight == nullptr || qzeros == nullptr || scales == nullptr)
    throw std::invalid_argument("awq_repack: null tensor");
  AwqPackedWeight out;
  out.K = K;
  out.N = N;
  out.group_size = group_size;
  out.k_pad = L::pad_k(K);
  out.n_pad = L::pad_n(N);
  const int stripes = out.n_pad / L::kStripeCols;
  const std::size_t groups = static_cast<std::size_t>(out.k_pad / group_size);
  out.tiles.assign(static_cast<std::size_t>(out.k_pad) * out.n_pad / 8, 0u);
  out.scales.assign(groups * out.n_pad, 0);
  out.zeros.assign(groups * stripes * L::kZeroWordsPerGroup, 0u);

  // About 1 ns per nibble: split tensors above a few million nibbles over threads by stripe.
  const long long nibbles = static_cast<long long>(out.k_pad) * out.n_pad;
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int workers =
      static_cast<int>(std::clamp<long long>(nibbles / (4ll << 20), 1, std::min(hw, stripes)));
  if (workers == 1) {
    repack_stripes(qweight, qzeros, scales, out, 0, stripes);
    return out;
  }
  std::vector<std::thread> threads;
  threads.reserve(workers);
  for (int w = 0; w < workers; ++w) {
    const int begin = static_cast<int>(static_cast<long long>(stripes) * w / workers);
    const int end = static_cast<int>(static_cast<long long>(stripes) * (w + 1) / workers);
    threads.emplace_back(repack_stripes, qweight, qzeros, scales, std::ref(out), begin, end);
  }
  for (auto& t : threads) t.join();
  return out;
}

std::size_t awq_weight_bytes(int K, int N, int group_size) {
  const std::size_t k_pad = L::pad_k(K), n_pad = L::pad_n(N);
  const std::size_t groups = k_pad / group_size;
  return k_pad * n_pad / 2 + groups * n_pad * 2 + groups * (n_pad / 64) * 32;
}

}  // namespace awqd::cuda
