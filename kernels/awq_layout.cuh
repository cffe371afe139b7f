// The repacked AWQ weight layout ("tile layout"): what awq_repack writes and every AWQ GEMM path
// reads. Shared by host code (the repack, its tests) and device code, so it is plain C++17.
//
// The checkpoint stores qweight int32 [K, N/8] (eight 4-bit values along N, AWQ nibble order),
// qzeros int32 [K/G, N/8] and scales fp16 [K/G, N] (SPEC section 2). The kernels want each lane of
// a warp to fetch, with one 16-byte load, exactly the int4 values it needs for the B operand of
// mma.m16n8k16 (and of two mma.m16n8k8 on Turing), in an order that a few bit operations turn into
// fp16 pairs. So the repack regroups the weights into fragment tiles:
//
//   stripe   64 output columns: N is padded to a multiple of 64 (k_pad/n_pad below); padded
//            columns hold q = z = 0 and scale 0, so they dequantize to exactly 0.
//   tile     16 k-rows x 64 columns of one stripe = 1024 int4 = 512 bytes, stored as
//            32 lanes x 4 words (lane-major: lane l's 16 bytes sit at byte 16*l, so one warp-wide
//            16-byte load reads the tile fully coalesced).
//   tiles    [n_pad/64 stripes][k_pad/16 tiles][32 lanes][4 words]: a stripe is contiguous along
//            K, so a thread block streaming one stripe's K range reads consecutive bytes.
//
// Inside a tile, lane l = 4*g + t (g = l/4 is the mma "groupID", t = l%4 "threadID_in_group"),
// word j (0..3), nibble p (bits 4p..4p+3, p = 4*kk + 2*nn + kh) holds
//   k = 2t + kk + 8*kh,   n = 16j + 8*nn + g          (relative to the tile's first k and column).
// Decoding a word w: (w >> 4a) & 0x000F000F, for a = 0..3, puts nibbles a and a+4 in the low and
// high halves: k and k+1 of one column, the pair one .f16x2 register of the B fragment holds.
//   a = 0: n8-tile 2j,   k = 2t,2t+1     (b0 of mma.m16n8k16; the B of the first m16n8k8)
//   a = 1: n8-tile 2j,   k = 2t+8,2t+9   (b1; the B of the second m16n8k8)
//   a = 2: n8-tile 2j+1, k = 2t,2t+1
//   a = 3: n8-tile 2j+1, k = 2t+8,2t+9
// OR-ing 0x6400 into each half makes the fp16 number 1024 + q (exact), so
//   W = ((1024 + q) - (1024 + z)) * s     (the subtraction is exact; one rounding, in the multiply)
// which is the fp16 value of (q - z) * s rounded to nearest: the CPU reference rounds the same way.
//
// Scales and zeros, per (stripe, group), ordered so that lane (g, t) finds the 8 columns it owns,
// n = 8i + g for i = 0..7 (i = 2j + nn), in one 16-byte and one 4-byte load:
//   scales  fp16 [n_pad/64][k_pad/G][8 (g)][8 (i)]                      128 bytes per (stripe,
//   group) zeros   u32  [n_pad/64][k_pad/G][8 (g)], nibble i = z of column 8i+g  32 bytes per
//   (stripe, group)
//
// K is padded to a multiple of 64 (the kernels' k-tile); since K % G == 0 and G is 32, 64 or 128,
// k_pad % G == 0 too. Padded rows hold q = 0 and their (padded) groups scale 0.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define AWQD_HD __host__ __device__ __forceinline__
#else
#define AWQD_HD inline
#endif

namespace awqd::cuda::awq_layout {

inline constexpr int kStripeCols = 64;        // output columns per stripe
inline constexpr int kTileRows = 16;          // k rows per fragment tile
inline constexpr int kTileWords = 32 * 4;     // u32 words per tile (32 lanes x 4)
inline constexpr int kTileBytes = 512;        // 16 x 64 int4
inline constexpr int kKPad = 64;              // K is padded to a multiple of this
inline constexpr int kScalesPerGroup = 64;    // fp16 per (stripe, group)
inline constexpr int kZeroWordsPerGroup = 8;  // u32 per (stripe, group)

AWQD_HD constexpr int pad_k(int K) { return (K + kKPad - 1) / kKPad * kKPad; }
AWQD_HD constexpr int pad_n(int N) { return (N + kStripeCols - 1) / kStripeCols * kStripeCols; }

struct TilePos {
  int k;  // 0..15 within the tile
  int n;  // 0..63 within the stripe
};

// Where nibble `nibble` of word `word` of lane `lane` sits in its 16 x 64 tile.
AWQD_HD constexpr TilePos tile_pos(int lane, int word, int nibble) {
  const int g = lane >> 2, t = lane & 3;
  const int kk = (nibble >> 2) & 1, nn = (nibble >> 1) & 1, kh = nibble & 1;
  return {2 * t + kk + 8 * kh, 16 * word + 8 * nn + g};
}

// Index (in u32 words) of word `word` of lane `lane` of tile `tile` (k / 16) of stripe `stripe`.
AWQD_HD constexpr std::size_t tile_word_index(int stripe, int tile, int lane, int word, int k_pad) {
  return ((static_cast<std::size_t>(stripe) * (k_pad / kTileRows) + tile) * 32 + lane) * 4 + word;
}

// Column n (0..63) of a stripe is owned by lanes with g = n % 8, as their i = n / 8.
AWQD_HD constexpr std::size_t scale_index(int stripe, int group, int n_in_stripe, int groups) {
  return (static_cast<std::size_t>(stripe) * groups + group) * kScalesPerGroup +
         (n_in_stripe % 8) * 8 + n_in_stripe / 8;
}
AWQD_HD constexpr std::size_t zero_word_index(int stripe, int group, int n_in_stripe, int groups) {
  return (static_cast<std::size_t>(stripe) * groups + group) * kZeroWordsPerGroup + n_in_stripe % 8;
}
AWQD_HD constexpr int zero_nibble(int n_in_stripe) { return n_in_stripe / 8; }

}  // namespace awqd::cuda::awq_layout
