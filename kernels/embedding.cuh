// Embedding gather: out[t, :] = table[token_ids[t] - vocab_start, :] for ids in
// [vocab_start, vocab_start + vocab_rows), zeros otherwise. vocab_start is 0 for a whole
// table; with tensor parallelism each GPU holds a slice of the vocabulary and the all-reduce
// that follows sums the one non-zero row (vLLM's VocabParallelEmbedding). Token ids are
// validated against the vocabulary by the engine before they reach a kernel; an id outside every
// shard thus never occurs, and the kernel never reads outside the table.
//
// Design: a 2-D grid (16-byte chunks x tokens), one 16-byte load and store per thread: a pure
// copy, 4 bytes moved per element. Same code on all archs. Constraints: hidden % 8 == 0,
// 16-byte aligned pointers.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace awqd::cuda {

// out: [num_tokens, hidden]; table: [vocab_rows, hidden]; token_ids: [num_tokens].
void embedding_gather(__half* out, const __half* table, const int* token_ids, int num_tokens,
                      int hidden, int vocab_start, int vocab_rows, cudaStream_t stream);

}  // namespace awqd::cuda
