// Host reference for the decode MLP kernel (kernels/decode_mlp.cuh), shared by the emulated test
// (CI) and the GPU test: the MLP half of a decoder layer computed in double with fp16 rounding at
// the points the separate kernels round (the GEMMs' fp16 outputs, the fp16 residual, the norms'
// fp16 outputs, SiLU(g) * u through silu_mul1).
#pragma once

#include <string>
#include <vector>

#include "engine/fp16.h"
#include "tests/awq_gemm_reference.h"

namespace awqd::test {

struct MlpReference {
  int M = 0, Ko = 0, H = 0, I = 0;
  float eps = 1e-5f;
  bool with_bias = false;
  AwqReference o, gate_up, down;  // the three weights (G = 128); their own x and ref are unused
  std::vector<half_bits> attn;       // [M, Ko]
  std::vector<half_bits> residual;   // [M, H], the input residual
  std::vector<half_bits> post_norm, next_norm;  // [H]
  std::vector<float> want_residual;  // [M, H] residual + o + down
  std::vector<float> want_out;       // [M, H] rmsnorm(want_residual) * next_norm
};

MlpReference make_mlp_reference(int M, int Ko, int H, int I, bool with_bias);

// "" when residual and out (fp16 bits, [M, H]) match the reference: every element finite, within
// 2 % of the row's RMS plus 2^-8 of its magnitude, and a relative L2 error under 5e-3. The
// separate kernels' sums can differ from ours by a few fp32 ulps, so an intermediate fp16 rounding
// may flip by one ulp (2^-11 relative) and travel through gate_up and down: ~1e-3 of the RMS at
// most on these shapes. A wrong stripe, split or norm moves outputs by tens of % of the RMS.
std::string check_mlp_output(const MlpReference& r, const half_bits* residual, const half_bits* out);

}  // namespace awqd::test
