// Host side of the decode MLP kernel (design: kernels/decode_mlp.cuh): support checks, the
// workspace, the launch.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.cuh"
#include "kernels/decode_mlp.cuh"
#include "kernels/decode_mlp_kernel.cuh"
#include "kernels/launch.cuh"

namespace awqd::cuda {
namespace {

namespace D = decode_mlp_detail;
static_assert(D::kMaxRows == kDecodeMlpMaxRows);

constexpr int kMaxWarps = 16;
constexpr int kMinWarps = 4;
constexpr std::size_t kBlockExtraBytes = 64;  // the block's 1 / RMS per row, after the rings
constexpr std::size_t kAlign = 256;

template <int kRows, int kSlots>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) decode_mlp_kernel(const D::Params p) {
  D::decode_mlp_block<kRows, kSlots>(p);
}

constexpr int kDefaultSlots = 3;

std::size_t align_up(std::size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

int max_stripes(const AwqWeight& o, const AwqWeight& gate_up, const AwqWeight& down) {
  return std::max({o.N, gate_up.N, down.N}) / 64;
}

// Workspace: [barrier u64][counters][sumsq][act][partials], each 256-byte aligned.
struct WorkspaceLayout {
  std::size_t counters, sumsq, act, partials, total;
};
WorkspaceLayout layout_for(const AwqWeight& o, const AwqWeight& gate_up, const AwqWeight& down,
                           int warps) {
  WorkspaceLayout l{};
  const int H = o.N, I = down.K;
  l.counters = kAlign;
  l.sumsq = l.counters + align_up(sizeof(int) * (o.N / 64 + I / 64 + down.N / 64));
  l.act = l.sumsq + align_up(sizeof(float) * 2 * (H / 64) * D::kMaxRows);
  l.partials = l.act + align_up(sizeof(__half) * D::kMaxRows * I);
  l.total = l.partials +
            align_up(sizeof(float) * D::kPartialFloats * (max_stripes(o, gate_up, down) + warps));
  return l;
}

// Warps per block for a variant: as many as their rings fit in shared memory, at most 16.
int warps_per_block(int rows, int slots) {
  const std::size_t per_warp = static_cast<std::size_t>(slots) * D::slot_bytes(rows);
  const std::size_t fit = (current_smem_optin() - kBlockExtraBytes) / per_warp;
  return static_cast<int>(std::min<std::size_t>(kMaxWarps, fit));
}

}  // namespace

std::string decode_mlp_unsupported(const AwqWeight& o, const AwqWeight& gate_up,
                                   const AwqWeight& down, int M) {
  if (current_sm_version() < 80 || use_sm75_path()) return "needs sm_80+ (cp.async)";
  if (M < 1 || M > D::kMaxRows) return "rows " + std::to_string(M) + " not in 1..8";
  if (warps_per_block(D::rows_variant(M), 2) < kMinWarps) return "not enough shared memory per block";
  const AwqWeight* ws[3] = {&o, &gate_up, &down};
  for (const AwqWeight* w : ws) {
    if (w->tiles == nullptr) return "a weight is not AWQ";
    if (w->group_size != D::kBatchRows) return "group size " + std::to_string(w->group_size) + " (needs 128)";
    if (w->K % 128 != 0 || w->N % 64 != 0)
      return "shape " + std::to_string(w->K) + "x" + std::to_string(w->N) + " (needs K % 128, N % 64)";
    if (static_cast<long long>(w->N / 64) * (w->K / 128) * kMaxWarps * current_sm_count() >= (1ll << 31))
      return "weight " + std::to_string(w->K) + "x" + std::to_string(w->N) + " too large for the 32-bit unit deal";
  }
  const int H = o.N;
  if (gate_up.K != H || down.N != H || gate_up.N != 2 * down.K)
    return "shapes do not chain (o N " + std::to_string(o.N) + ", gate_up " + std::to_string(gate_up.K) + "x" +
           std::to_string(gate_up.N) + ", down " + std::to_string(down.K) + "x" + std::to_string(down.N) + ")";
  return {};
}

std::size_t decode_mlp_workspace_bytes(const AwqWeight& o, const AwqWeight& gate_up,
                                       const AwqWeight& down) {
  return layout_for(o, gate_up, down, kMaxWarps * current_sm_count()).total;
}

void decode_mlp_workspace_init(void* workspace, std::size_t bytes, cudaStream_t stream) {
  if (workspace != nullptr && bytes > 0) CUDA_CHECK(cudaMemsetAsync(workspace, 0, bytes, stream));
}

int decode_mlp_trace_points() { return D::kTracePoints; }

int decode_mlp_blocks(int requested) {
  const int sms = current_sm_count();
  return requested > 0 ? std::min(requested, sms) : sms;
}

void decode_mlp(const DecodeMlpArgs& a, cudaStream_t stream) {
  const std::string why = decode_mlp_unsupported(a.o, a.gate_up, a.down, a.M);
  if (!why.empty()) throw std::invalid_argument("decode_mlp: " + why);
  const int H = a.o.N, I = a.down.K;
  if (a.attn == nullptr || a.residual == nullptr || a.out == nullptr || a.post_norm == nullptr ||
      a.next_norm == nullptr || a.workspace == nullptr)
    throw std::invalid_argument("decode_mlp: null pointer argument");
  if (a.attn_ld < a.o.K || a.attn_ld % 8 != 0)
    throw std::invalid_argument("decode_mlp: attn_ld " + std::to_string(a.attn_ld));
  const int blocks = decode_mlp_blocks(a.blocks);
  const int rows = D::rows_variant(a.M);
  int slots = a.ring_slots > 0 ? a.ring_slots : kDefaultSlots;
  if (slots != 2 && slots != 3) throw std::invalid_argument("decode_mlp: ring_slots " + std::to_string(slots));
  if (warps_per_block(rows, slots) < kMinWarps) slots = 2;  // a GPU with little shared memory
  const int warps = warps_per_block(rows, slots);
  const WorkspaceLayout l = layout_for(a.o, a.gate_up, a.down, blocks * kMaxWarps);
  if (a.workspace_bytes < l.total)
    throw std::invalid_argument("decode_mlp: workspace of " + std::to_string(a.workspace_bytes) +
                                " bytes, needs " + std::to_string(l.total));
  auto* base = static_cast<unsigned char*>(a.workspace);
  D::Params p{};
  const AwqWeight* ws[3] = {&a.o, &a.gate_up, &a.down};
  const __half* biases[3] = {a.o_bias, a.gate_up_bias, a.down_bias};
  for (int i = 0; i < D::kPhases; ++i) {
    p.w[i].tiles = ws[i]->tiles;
    p.w[i].scales = ws[i]->scales;
    p.w[i].zeros = ws[i]->zeros;
    p.w[i].bias = biases[i];
    p.w[i].stripes = ws[i]->N / 64;
    p.w[i].batches = ws[i]->K / 128;
  }
  p.attn = a.attn;
  p.attn_ld = a.attn_ld;
  p.residual = a.residual;
  p.out = a.out;
  p.act = reinterpret_cast<__half*>(base + l.act);
  p.post_norm = a.post_norm;
  p.next_norm = a.next_norm;
  p.eps = a.eps;
  p.partials = reinterpret_cast<float*>(base + l.partials);
  p.sumsq = reinterpret_cast<float*>(base + l.sumsq);
  p.counters = reinterpret_cast<int*>(base + l.counters);
  p.barrier = reinterpret_cast<unsigned long long*>(base);
  p.trace = a.trace;
  p.experiment = a.experiment;
  p.M = a.M;
  p.H = H;
  p.I = I;
  const std::size_t smem = static_cast<std::size_t>(warps) * slots * D::slot_bytes(rows) + kBlockExtraBytes;
  D::with_variant(a.M, slots, [&](auto r, auto s) {
    launch_pdl(a.pdl, decode_mlp_kernel<decltype(r)::value, decltype(s)::value>, dim3(blocks), dim3(warps * 32),
               smem, stream, p);
  });
}

}  // namespace awqd::cuda
