// The decode MLP kernel (kernels/decode_mlp.cuh) on the GPU against the host reference of
// tests/decode_mlp_reference.h: the launcher's full grid (one block per SM) and small grids,
// rows 1..8, with and without bias, Llama-3-8B's MLP shapes, repeated calls on one workspace
// (stripe counters and the grid barrier carried across calls, as in the engine's CUDA graphs),
// and the refusals (group size, rows, shapes). Skipped without a CUDA device or below sm_80.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/awq_gemm.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/decode_mlp.cuh"
#include "kernels/launch.cuh"
#include "tests/decode_mlp_reference.h"
#include "tests/kernel_test_util.h"

namespace {

using awqd::half_bits;
using awqd::test::KernelBuffer;
using awqd::test::MlpReference;
namespace cuda = awqd::cuda;

void require_sm80() {
  if (cuda::current_sm_version() < 80) GTEST_SKIP() << "decode_mlp needs sm_80+";
}

struct DeviceMlp {
  cuda::AwqDeviceWeight o, gate_up, down;
  KernelBuffer<half_bits> o_bias, gate_up_bias, down_bias, attn, residual, out, post_norm, next_norm;
  explicit DeviceMlp(const MlpReference& r)
      : o(r.o.packed), gate_up(r.gate_up.packed), down(r.down.packed), o_bias(r.o.bias),
        gate_up_bias(r.gate_up.bias), down_bias(r.down.bias), attn(r.attn), residual(r.residual),
        out(r.residual.size()), post_norm(r.post_norm), next_norm(r.next_norm) {}
};

// Runs `calls` calls on one workspace (the residual re-uploaded before each); "" or what failed.
std::string run_and_check(const MlpReference& r, int blocks, int calls) {
  DeviceMlp d(r);
  const std::size_t ws_bytes = cuda::decode_mlp_workspace_bytes(d.o.view(), d.gate_up.view(), d.down.view());
  KernelBuffer<unsigned char> ws(ws_bytes);
  cuda::decode_mlp_workspace_init(ws.get(), ws_bytes, nullptr);
  std::string failure;
  for (int call = 0; call < calls; ++call) {
    d.residual.upload(r.residual);
    d.out.poison();
    cuda::DecodeMlpArgs a;
    a.o = d.o.view();
    a.gate_up = d.gate_up.view();
    a.down = d.down.view();
    if (r.with_bias) {
      a.o_bias = awqd::test::as_half<const __half>(d.o_bias);
      a.gate_up_bias = awqd::test::as_half<const __half>(d.gate_up_bias);
      a.down_bias = awqd::test::as_half<const __half>(d.down_bias);
    }
    a.attn = awqd::test::as_half<const __half>(d.attn);
    a.attn_ld = r.Ko;
    a.residual = awqd::test::as_half<__half>(d.residual);
    a.out = awqd::test::as_half<__half>(d.out);
    a.post_norm = awqd::test::as_half<const __half>(d.post_norm);
    a.next_norm = awqd::test::as_half<const __half>(d.next_norm);
    a.eps = r.eps;
    a.M = r.M;
    a.workspace = ws.get();
    a.workspace_bytes = ws_bytes;
    a.blocks = blocks;
    cuda::decode_mlp(a, nullptr);
    awqd::test::device_sync();
    const std::vector<half_bits> res = d.residual.download(), out = d.out.download();
    const std::string f = awqd::test::check_mlp_output(r, res.data(), out.data());
    if (!f.empty()) failure += "call " + std::to_string(call) + ": " + f;
  }
  return failure;
}

TEST(DecodeMlp, MatchesReference) {
  AWQD_REQUIRE_CUDA();
  require_sm80();
  struct Case {
    int M, Ko, H, I, blocks;
    bool bias;
  };
  const Case cases[] = {
      {1, 1024, 1024, 2816, 0, false}, {3, 1024, 1024, 2816, 0, true}, {8, 1024, 1024, 2816, 0, false},
      {8, 2048, 1024, 2816, 5, true},  {2, 512, 1024, 1536, 1, false}, {7, 1024, 1024, 2816, 33, false},
  };
  for (const Case& c : cases) {
    const MlpReference r = awqd::test::make_mlp_reference(c.M, c.Ko, c.H, c.I, c.bias);
    const std::string failure = run_and_check(r, c.blocks, 3);
    EXPECT_TRUE(failure.empty()) << "M=" << c.M << " Ko=" << c.Ko << " H=" << c.H << " I=" << c.I
                                 << " blocks=" << c.blocks << " bias=" << c.bias << ": " << failure;
  }
}

TEST(DecodeMlp, Llama3Shapes) {
  AWQD_REQUIRE_CUDA();
  require_sm80();
  for (int M : {1, 8}) {
    const MlpReference r = awqd::test::make_mlp_reference(M, 4096, 4096, 14336, false);
    const std::string failure = run_and_check(r, 0, 2);
    EXPECT_TRUE(failure.empty()) << "M=" << M << ": " << failure;
  }
}

TEST(DecodeMlp, RefusesWhatItCannotRun) {
  AWQD_REQUIRE_CUDA();
  require_sm80();
  const MlpReference r = awqd::test::make_mlp_reference(1, 256, 256, 384, false);
  DeviceMlp d(r);
  EXPECT_EQ(cuda::decode_mlp_unsupported(d.o.view(), d.gate_up.view(), d.down.view(), 1), "");
  EXPECT_NE(cuda::decode_mlp_unsupported(d.o.view(), d.gate_up.view(), d.down.view(), 9), "");
  EXPECT_NE(cuda::decode_mlp_unsupported(d.o.view(), d.gate_up.view(), d.down.view(), 0), "");
  // gate_up's N must be twice down's K, and o's N the hidden size gate_up reads.
  EXPECT_NE(cuda::decode_mlp_unsupported(d.o.view(), d.down.view(), d.down.view(), 1), "");
  const awqd::test::AwqReference g64 = awqd::test::make_awq_reference(256, 256, 64, 1);
  const cuda::AwqDeviceWeight o64(g64.packed);
  const std::string why = cuda::decode_mlp_unsupported(o64.view(), d.gate_up.view(), d.down.view(), 1);
  EXPECT_NE(why.find("group size"), std::string::npos) << why;
  cuda::DecodeMlpArgs a;
  a.o = o64.view();
  a.gate_up = d.gate_up.view();
  a.down = d.down.view();
  a.M = 1;
  EXPECT_THROW(cuda::decode_mlp(a, nullptr), std::invalid_argument);
}

}  // namespace
