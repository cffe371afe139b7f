#include "kernels/cublaslt_gemm.cuh"

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kernels/cuda_check.cuh"

#define CUBLASLT_CHECK(expr)                                                                 \
  do {                                                                                       \
    cublasStatus_t awqd_status_ = (expr);                                                    \
    if (awqd_status_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::awqd::cuda::throw_cuda_error(#expr, cublasLtGetStatusString(awqd_status_), __FILE__, \
                                     __LINE__);                                              \
  } while (0)

namespace awqd::cuda {
namespace {

// Largest power of two (<= 256) that divides the address: what cuBLASLt may assume.
int alignment_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  int align = 256;
  while (align > 2 && a % align != 0) align /= 2;
  return align;
}

using Key = std::tuple<int, int, int, int, int, int, int, bool, int, int, int, std::size_t, bool, bool>;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// One handle and plan cache per device, each behind its own lock. Never one lock for all
// devices: a call can block inside cuBLASLt (loading a kernel's module waits for the device to be
// idle), and with tensor parallelism that device may be running an all-reduce that waits for a
// peer rank, whose thread must not then wait on this lock to reach it (a deadlock that the P2P
// all-reduce's 30 s timeout turned into a failed launch).
struct DeviceCache {
  std::mutex mutex;
  cublasLtHandle_t handle = nullptr;
  std::map<Key, Plan> plans;
};

DeviceCache& cache(int device) {
  constexpr int kMaxDevices = 64;
  static DeviceCache* caches = new DeviceCache[kMaxDevices];  // never destroyed: handles outlive static destructors
  if (device < 0 || device >= kMaxDevices)
    throw std::invalid_argument("cublaslt_gemm: device " + std::to_string(device) + " beyond the supported 64");
  return caches[device];
}

Plan make_plan(cublasLtHandle_t handle, int M, int N, int K, int ldx, int ldw, int ldy,
               bool has_bias, int align_x, int align_w, int align_y, std::size_t ws_bytes,
               bool w_nk, bool y_fp32) {
  Plan plan;
  CUBLASLT_CHECK(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t no_trans = CUBLAS_OP_N;
  const cublasOperation_t trans_a = w_nk ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                sizeof(trans_a)));
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans,
                                                sizeof(no_trans)));
  if (has_bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = CUDA_R_16F;
    CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                  sizeof(epilogue)));
    CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                  &bias_type, sizeof(bias_type)));
  }
  if (w_nk) {
    CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16F, K, N, ldw));
  } else {
    CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16F, N, K, ldw));
  }
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16F, K, M, ldx));
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan.d, y_fp32 ? CUDA_R_32F : CUDA_R_16F, N, M, ldy));

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint32_t aw = align_w, ax = align_x, ay = align_y;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof(aw)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof(ax)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ay, sizeof(ay)));
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof(ay)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle, plan.op, plan.a, plan.b, plan.d, plan.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0)
    throw CudaError("cuBLASLt found no fp16 GEMM algorithm for M=" + std::to_string(M) +
                    " N=" + std::to_string(N) + " K=" + std::to_string(K) + " (" +
                    cublasLtGetStatusString(status) + ")");
  plan.algo = result.algo;
  return plan;
}

}  // namespace

void cublaslt_gemm_f16(const __half* x, int ldx, const __half* w, int ldw, const __half* bias,
                       __half* y, int ldy, int M, int N, int K, void* workspace,
                       std::size_t workspace_bytes, cudaStream_t stream) {
  DenseGemmArgs a;
  a.x = x;
  a.ldx = ldx;
  a.w = w;
  a.ldw = ldw;
  a.bias = bias;
  a.y = y;
  a.ldy = ldy;
  a.M = M;
  a.N = N;
  a.K = K;
  a.workspace = workspace;
  a.workspace_bytes = workspace_bytes;
  cublaslt_gemm(a, stream);
}

void cublaslt_gemm(const DenseGemmArgs& args, cudaStream_t stream) {
  const __half* x = args.x;
  const __half* w = args.w;
  const __half* bias = args.bias;
  void* y = args.y;
  const int ldx = args.ldx, ldw = args.ldw, ldy = args.ldy, M = args.M, N = args.N, K = args.K;
  const bool w_nk = args.layout == WeightLayout::kNK;
  void* workspace = args.workspace;
  std::size_t workspace_bytes = args.workspace_bytes;
  if (M <= 0 || N <= 0 || K <= 0 || ldx < K || ldw < (w_nk ? K : N) || ldy < N)
    throw std::invalid_argument("cublaslt_gemm: bad sizes M=" + std::to_string(M) +
                                " N=" + std::to_string(N) + " K=" + std::to_string(K));
  if (x == nullptr || w == nullptr || y == nullptr)
    throw std::invalid_argument("cublaslt_gemm: null operand");
  if (bias != nullptr && args.y_fp32)
    throw std::invalid_argument("cublaslt_gemm: a bias needs an fp16 output");
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (workspace == nullptr) workspace_bytes = 0;

  DeviceCache& c = cache(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.handle == nullptr) CUBLASLT_CHECK(cublasLtCreate(&c.handle));
  const Key key{device,
                M,
                N,
                K,
                ldx,
                ldw,
                ldy,
                bias != nullptr,
                alignment_of(x),
                alignment_of(w),
                alignment_of(y),
                workspace_bytes,
                w_nk,
                args.y_fp32};
  auto plan_it = c.plans.find(key);
  if (plan_it == c.plans.end()) {
    plan_it = c.plans
                  .emplace(key, make_plan(c.handle, M, N, K, ldx, ldw, ldy,
                                          bias != nullptr, alignment_of(x), alignment_of(w),
                                          alignment_of(y), workspace_bytes, w_nk, args.y_fp32))
                  .first;
  }
  Plan& plan = plan_it->second;
  if (bias != nullptr)
    CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof(bias)));
  const float alpha = 1.0f, beta = 0.0f;
  CUBLASLT_CHECK(cublasLtMatmul(c.handle, plan.op, &alpha, w, plan.a, x, plan.b, &beta, y,
                                plan.d, y, plan.d, &plan.algo, workspace, workspace_bytes, stream));
}

}  // namespace awqd::cuda
