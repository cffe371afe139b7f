#include <string>

#include "kernels/common.cuh"
#include "kernels/embedding.cuh"

namespace awqd::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void embedding_gather_kernel(uint4* __restrict__ out, const uint4* __restrict__ table,
                                        const int* __restrict__ token_ids, int chunks,
                                        int vocab_start, int vocab_rows) {
  const int chunk = blockIdx.x * kThreads + threadIdx.x;
  if (chunk >= chunks) return;
  const int row = token_ids[blockIdx.y] - vocab_start;
  uint4 v = make_uint4(0, 0, 0, 0);
  if (row >= 0 && row < vocab_rows) v = table[static_cast<std::size_t>(row) * chunks + chunk];
  out[static_cast<std::size_t>(blockIdx.y) * chunks + chunk] = v;
}

}  // namespace

void embedding_gather(__half* out, const __half* table, const int* token_ids, int num_tokens,
                      int hidden, int vocab_start, int vocab_rows, cudaStream_t stream) {
  constexpr const char* kName = "embedding_gather";
  AWQD_ARG_CHECK(kName, num_tokens >= 0 && num_tokens <= 65535,
                 "num_tokens=" + std::to_string(num_tokens));
  AWQD_ARG_CHECK(kName, hidden > 0 && hidden % 8 == 0, "hidden=" + std::to_string(hidden));
  AWQD_ARG_CHECK(
      kName, vocab_rows > 0 && vocab_start >= 0,
      "vocab_start=" + std::to_string(vocab_start) + " vocab_rows=" + std::to_string(vocab_rows));
  AWQD_ARG_CHECK(kName, aligned16(out) && aligned16(table), "pointers must be 16-byte aligned");
  if (num_tokens == 0) return;
  const int chunks = hidden / 8;
  launch(embedding_gather_kernel, dim3((chunks + kThreads - 1) / kThreads, num_tokens),
         dim3(kThreads), 0, stream, reinterpret_cast<uint4*>(out),
         reinterpret_cast<const uint4*>(table), token_ids, chunks, vocab_start, vocab_rows);
}

}  // namespace awqd::cuda
