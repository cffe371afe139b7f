// Host reference for the AWQ GEMM tests (the GPU test and the CPU-emulated kernel test).
//
// A random fp32 W (per-group offsets, so zero points span 0..15) goes through awq_quantize;
// W16 = fp16(awq_dequantize(...)) are exactly the fp16 values the tiled and wgmma kernels
// multiply by (the exact q - z times the fp16 scale, rounded once): ref = sum_k x*W16 in double.
// The stream kernel's sm_80+ tiles never round W: they multiply x by the exact integers q - z and
// scale each group's fp32 sum by s, so their reference is ref_exact = sum_k x*(q - z)*s (the
// products (q - z)*s have at most 15 significant bits: exact in fp32 and double).
//
// Tolerance for one output, with mag = sqrt(sum_k (x_k W16_k)^2):
//   |y - ref| <= 2^-10 |ref|                                   fp16 output rounding (2^-11) x 2
//              + (K + 8 splits + 32 + K / G) 2^-23 (|ref| + 4 mag)   fp32 accumulation
// The products x*W16 (and x*(q - z)) are exact in fp32 (11-bit significands). The tensor cores add
// the products of each mma into the fp32 accumulator after aligning them to the largest exponent
// and truncating, so each of the K products can lose up to one fp32 ulp (2^-23 relative) of the
// running sum; split-K, the warps' k-split, the exact path's K / G group scalings and cuBLASLt add
// a few more fp32 roundings. A running sum of random-sign terms stays within a few mag of zero
// (4 mag bounds it with a wide margin). For the test shapes this is 0.1% to 1% of mag: a wrong
// scale or zero for one group of 32 rows moves an output by several % of mag, a wrong column or
// tile by ~100%. (Checked against the other model's reference, an output differs by up to
// ~3.5 sigma of 2^-11 mag / sqrt(3), the W16 rounding: beyond this tolerance, so each path must
// match its own model.) On top, the relative L2 error over all outputs must stay under 4e-3 (fp16
// output rounding alone gives ~4e-4).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/fp16.h"
#include "kernels/awq_gemm.cuh"

namespace awqd::test {

struct AwqReference {
  int K = 0, N = 0, G = 0, max_M = 0;
  std::vector<half_bits> x;      // [max_M, K] activations, uniform in [-1, 1]
  std::vector<half_bits> bias;   // [N], uniform in [-1, 1]
  std::vector<double> ref;       // [max_M, N] x * W16, without the bias
  std::vector<double> ref_exact;  // [max_M, N] x * (q - z) * s (W unrounded), without the bias
  std::vector<double> mag;       // [max_M, N] sqrt(sum_k (x_k W16_k)^2)
  cuda::AwqPackedWeight packed;  // awq_repack of the quantized W
  std::vector<float> w16;        // [K, N] the dequantized fp16 weights, as floats
  std::vector<float> w_exact;    // [K, N] (q - z) * s unrounded (exact in fp32)
};

AwqReference make_awq_reference(int K, int N, int G, int max_M);

// (Re)computes ref, ref_exact and mag from r.x (after a test replaces the activations).
void compute_reference_sums(AwqReference& r);

// Which weights a kernel multiplies by: W16 (fp16-rounded) or the exact (q - z) * s.
enum class AwqWeights { kFp16, kExact };

// The model of the kernel a plan ran: kExact for the stream tiles on the sm_80+ path.
AwqWeights awq_weights_of(cuda::AwqGemmPath path, cuda::AwqTile tile);

// Compares y (fp16 bits, [M, N]) with the reference (+ bias when with_bias). Returns "" when
// every element is finite and within tolerance, else what failed: counts, the relative L2 error
// and the worst element with its position, value, reference and tolerance.
std::string check_awq_output(const AwqReference& r, const half_bits* y, int M, bool with_bias,
                             int splits, AwqWeights weights);

}  // namespace awqd::test
