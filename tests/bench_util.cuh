// What the GPU benchmarks (bench_awq_gemm, bench_decode_mlp) share, as METHOD.md asks: random
// data made on the GPU (never zeros), a CUDA-graph timer (warm-up, then a graph of back-to-back
// calls replayed 7 times, the median), and the copy bandwidth measured in the same run.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/cuda_check.cuh"

namespace awqd::bench {

// ---- random fill on the GPU ----
__device__ std::uint32_t hash32(std::uint64_t i, std::uint32_t seed) {
  std::uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<std::uint32_t>(z ^ (z >> 31));
}
__global__ void fill_u32(std::uint32_t* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x)
    p[i] = hash32(i, seed);
}
__global__ void fill_half(__half* p, std::size_t n, std::uint32_t seed, float lo, float hi) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x)
    p[i] = __float2half(lo + (hi - lo) * (hash32(i, seed) >> 8) * (1.0f / 16777216.0f));
}

template <class T>
T* device_alloc(std::size_t count) {
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)));
  return static_cast<T*>(p);
}

// ---- timing ----
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Microseconds per call of call(i) (i = the call's index, for rotating buffers).
inline double time_us(cudaStream_t stream, const std::function<void(int)>& call) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) call(i);  // warm-up: caches, attributes, cuBLASLt plans
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < 5; ++i) call(i);
  CUDA_CHECK(cudaEventRecord(stop, stream));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  const double estimate_us = std::max(1.0, 1000.0 * ms / 5);
  const int reps = static_cast<int>(std::clamp(2000.0 / estimate_us, 3.0, 400.0));

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    for (int i = 0; i < reps; ++i) call(i);
  } catch (...) {  // leave capture mode, so the caller may go on with this stream
    if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph != nullptr)
      cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, stream));  // warm replay
  std::vector<double> samples;
  for (int r = 0; r < 7; ++r) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    CUDA_CHECK(cudaGraphLaunch(exec, stream));
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    samples.push_back(1000.0 * ms / reps);
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return median(samples);
}

inline double measure_hbm_gbs(cudaStream_t stream) {
  std::size_t free_bytes = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  const std::size_t bytes = std::min<std::size_t>(std::size_t{1} << 30, free_bytes / 4);
  char* a = device_alloc<char>(bytes);
  char* b = device_alloc<char>(bytes);
  CUDA_CHECK(cudaMemset(a, 1, bytes));
  CUDA_CHECK(cudaMemset(b, 2, bytes));
  const double us = time_us(stream, [&](int i) {
    CUDA_CHECK(
        cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  return 2.0 * bytes / us / 1e3;  // GB/s
}

// Read-only stream: every 16 bytes of `n` uint4 read once (through the non-coherent path, as the
// GEMMs read weights), folded into one word per thread so the loads are not dead.
__global__ void read_stream(const uint4* p, std::size_t n, std::uint32_t* sink) {
  std::uint32_t acc = 0;
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // practically never: keeps the loads
}

// GB/s of a 1 GiB read-only stream (bytes read over the time): the ceiling for kernels that only
// read their weights, which the copy figure (half reads, half writes) understates.
inline double measure_read_gbs(cudaStream_t stream) {
  const std::size_t bytes = std::size_t{1} << 30;
  auto* a = device_alloc<uint4>(bytes / 16);
  auto* sink = device_alloc<std::uint32_t>(1);
  fill_u32<<<1024, 256>>>(reinterpret_cast<std::uint32_t*>(a), bytes / 4, 99);
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const double us = time_us(stream, [&](int) { read_stream<<<sms * 8, 512, 0, stream>>>(a, bytes / 16, sink); });
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(sink));
  return bytes / us / 1e3;
}

}  // namespace awqd::bench
