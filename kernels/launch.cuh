// Kernel launching shared by every launcher in kernels/: the properties of the current device
// (cached), the choice between the sm_80+ and the sm_75 code path, and one launch function that
// raises the dynamic shared-memory limit when needed and checks the launch.
//
// Code paths. Kernels that use tensor cores or asynchronous copies come in two variants:
//   sm_80+ : mma.m16n8k16, cp.async pipelines (runs on Ampere, Ada, Hopper);
//   sm_75  : mma.m16n8k8, register-staged loads (Turing; no cp.async, no bf16).
// The sm_75 path is chosen on a device below 8.0, or everywhere when forced: by
// set_force_sm75_path(true) or the environment variable AWQD_FORCE_SM75=1, so that the Turing
// path is tested on a Hopper card (SPEC section 7).
//
// With -DAWQD_EMULATE (tests only) kernels run on the host through kernels/emu/emu.h.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "kernels/cuda_check.cuh"

#ifdef AWQD_EMULATE
#include "kernels/emu/emu.h"
#endif

namespace awqd::cuda {

// The current device's compute capability as 10 * major + minor, e.g. 75, 90.
int current_sm_version();
// Streaming multiprocessors of the current device.
int current_sm_count();
// Largest dynamic shared memory a block may opt in to on the current device, in bytes.
std::size_t current_smem_optin();

// Forces (or stops forcing) the sm_75 kernel path process-wide. Initialised from AWQD_FORCE_SM75.
void set_force_sm75_path(bool force);
bool sm75_path_forced();
// True when kernels must take their sm_75 path on the current device.
bool use_sm75_path();

namespace detail {
// Raises the kernel's dynamic shared-memory limit on the current device when its static plus
// `bytes` of dynamic shared memory exceed the default 48 KiB (once per kernel and device; later
// calls are a lookup). Throws when the device cannot give that much.
void allow_dynamic_smem(const void* kernel, std::size_t bytes);
}  // namespace detail

#if defined(__CUDACC__) || defined(AWQD_EMULATE)
// Launches kernel<<<grid, block, smem, stream>>>(args...) and checks the launch. (Kernel
// sources only; host C++ may include this header for the path and device queries above.)
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
            Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
#ifdef AWQD_EMULATE
  (void)stream;
  emu::launch(grid, block, smem, [&] { kernel(static_cast<Params>(args)...); });
#else
  // Static + dynamic shared memory above 48 KiB needs the kernel's opt-in attribute raised.
  if (smem > 0) detail::allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  // clang-format off
  kernel<<<grid, block, smem, stream>>>(static_cast<Params>(args)...);
  // clang-format on
  CUDA_CHECK_LAUNCH();
#endif
}

// launch(), with Programmatic Dependent Launch where `pdl` is set, the device is sm_90+ and the
// stream is not the legacy default one (which also synchronizes with other streams): the kernel
// may start while the previous kernel on the stream runs (once that one has executed
// ptx::launch_dependents() in every block), and must execute ptx::grid_dependency_wait() before
// it reads anything that kernel may write or writes anything it may read. Kernels whose every
// block waits first are safe after any predecessor; one that reads earlier (decode attention's
// KV prefetch) says in its arguments what it assumes. Below sm_90 and in the emulator: launch().
template <typename... Params, typename... Args>
void launch_pdl(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                cudaStream_t stream, Args&&... args) {
#ifndef AWQD_EMULATE
  if (pdl && stream != nullptr && stream != cudaStreamLegacy && current_sm_version() >= 90) {
    static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
    if (smem > 0) detail::allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...));
    return;
  }
#endif
  launch(kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}
#endif

}  // namespace awqd::cuda

// Dynamic shared memory inside a kernel: `AWQD_DYNAMIC_SMEM(uint4, smem);` declares `uint4* smem`.
#ifdef AWQD_EMULATE
#define AWQD_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::awqd::emu::dynamic_smem())
#else
#define AWQD_DYNAMIC_SMEM(T, name)                                \
  extern __shared__ __align__(16) unsigned char awqd_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(awqd_dyn_smem_)
#endif

// Device code of the sm_80+ path compiles only where it can run (or in the emulator).
#if defined(AWQD_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#define AWQD_SM80_CODE 1
#else
#define AWQD_SM80_CODE 0
#endif
