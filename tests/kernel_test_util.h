// Shared by the kernel tests (test_ops, test_attention, test_sampling_gpu). Each of them builds
// twice from one source:
//   test_X      on the GPU (LABELS gpu; skipped without a device), the full shape sweep;
//   test_X_emu  against the host emulator (kernels/emu, AWQD_TEST_EMULATED), a smaller sweep
//               that runs everywhere, CI included: the kernels' indexing, fragment layouts,
//               barriers and edge cases are checked on every commit, timing is not.
// Buffers start poisoned (every byte 0xFF: NaN in fp16 and fp32, -1 in int32) so an output a
// kernel forgot to write fails the comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "engine/fp16.h"

#ifndef AWQD_TEST_EMULATED
#include <cuda_runtime.h>

#include "kernels/cuda_check.cuh"
#include "tests/test_support.h"
#endif

namespace awqd::test {

#ifdef AWQD_TEST_EMULATED
inline constexpr bool kEmulated = true;
#define AWQD_KERNEL_TEST_PRELUDE() \
  do {                             \
  } while (0)
#else
inline constexpr bool kEmulated = false;
#define AWQD_KERNEL_TEST_PRELUDE() AWQD_REQUIRE_CUDA()
#endif

// The small shape sweep only: always in emulation, and on the GPU when AWQD_TEST_QUICK is set
// (for runs under compute-sanitizer, which is ~100x slower).
inline bool quick() {
  static const bool q = kEmulated || std::getenv("AWQD_TEST_QUICK") != nullptr;
  return q;
}

// A buffer the kernels can read and write: device memory on the GPU, host memory in emulation.
template <typename T>
class KernelBuffer {
 public:
  explicit KernelBuffer(std::size_t n) : n_(n) {
#ifdef AWQD_TEST_EMULATED
    host_.resize(n_ == 0 ? 1 : n_);
#else
    CUDA_CHECK(cudaMalloc(&dev_, (n_ == 0 ? 1 : n_) * sizeof(T)));
#endif
    poison();
  }
  explicit KernelBuffer(const std::vector<T>& v) : KernelBuffer(v.size()) { upload(v); }
  ~KernelBuffer() {
#ifndef AWQD_TEST_EMULATED
    cudaFree(dev_);
#endif
  }
  KernelBuffer(const KernelBuffer&) = delete;
  KernelBuffer& operator=(const KernelBuffer&) = delete;

  T* get() {
#ifdef AWQD_TEST_EMULATED
    return host_.data();
#else
    return dev_;
#endif
  }
  std::size_t size() const { return n_; }

  void upload(const std::vector<T>& v) {
    ASSERT_EQ(v.size(), n_);
#ifdef AWQD_TEST_EMULATED
    std::copy(v.begin(), v.end(), host_.begin());
#else
    CUDA_CHECK(cudaMemcpy(dev_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
#endif
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
#ifdef AWQD_TEST_EMULATED
    std::copy(host_.begin(), host_.begin() + n_, v.begin());
#else
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(v.data(), dev_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
#endif
    return v;
  }
  void fill_bytes(int byte) {
#ifdef AWQD_TEST_EMULATED
    std::memset(static_cast<void*>(host_.data()), byte, host_.size() * sizeof(T));
#else
    CUDA_CHECK(cudaMemset(dev_, byte, (n_ == 0 ? 1 : n_) * sizeof(T)));
#endif
  }
  void poison() { fill_bytes(0xFF); }

 private:
  std::size_t n_;
#ifdef AWQD_TEST_EMULATED
  std::vector<T> host_;
#else
  T* dev_ = nullptr;
#endif
};

// Waits for the device and surfaces asynchronous kernel faults.
inline void device_sync() {
#ifndef AWQD_TEST_EMULATED
  CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

// The fp16 pointer type the launchers take, for a buffer of raw fp16 bits.
template <typename H>
H* as_half(KernelBuffer<half_bits>& b) {
  return reinterpret_cast<H*>(b.get());
}

inline std::vector<half_bits> random_half(std::size_t n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<half_bits> v(n);
  for (auto& h : v) h = float_to_half(dist(rng));
  return v;
}

inline std::vector<float> to_float(const std::vector<half_bits>& v) {
  std::vector<float> f(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) f[i] = half_to_float(v[i]);
  return f;
}

// |got - ref| <= atol + rtol * |ref| everywhere (NaN never passes). On failure, names the case
// and the worst element: index, got, ref, and how many elements failed.
inline ::testing::AssertionResult all_close(const std::string& what, std::span<const float> got,
                                            std::span<const float> ref, float atol, float rtol) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " != reference size " << ref.size();
  }
  std::size_t bad = 0, worst = 0;
  double worst_excess = -1.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double tol = atol + rtol * std::fabs(static_cast<double>(ref[i]));
    const double excess = std::isnan(got[i]) || std::isnan(ref[i]) ? 1e300 : err - tol;
    if (excess > 0) ++bad;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << got.size() << " elements outside atol " << atol
         << " + rtol " << rtol << "; worst at index " << worst << ": got " << got[worst]
         << ", reference " << ref[worst];
}

}  // namespace awqd::test
