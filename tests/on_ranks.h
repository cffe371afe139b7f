// fn(rank) on one thread per rank 0..n-1, each with CUDA device `rank` current; joins them all and
// rethrows the first failure. For the multi-GPU tests and benchmarks (all-reduce, tensor
// parallelism), where each GPU must be driven from its own thread.
#pragma once

#include <cuda_runtime.h>

#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "kernels/cuda_check.cuh"

namespace awqd::test {

inline void on_ranks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(n);
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        CUDA_CHECK(cudaSetDevice(r));
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace awqd::test
