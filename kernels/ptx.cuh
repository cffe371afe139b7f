// Device helpers shared by the kernels: tensor-core mma, ldmatrix, cp.async and fp16 packing
// (kernels/half_pack.cuh).
// Every inline-PTX instruction of awqd lives here, each with its host-emulation counterpart
// (kernels/emu/emu.h), so the kernels themselves are plain CUDA C++.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16/m16n8k8"), with
// g = lane / 4 (group) and t = lane % 4 (thread in group); each .b32 holds two fp16, the lower
// column index in the low half:
//   A 16x16 (row-major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 =
//   A[g+8][2t+8..] B 16x8  (k x n):     b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g] C 16x8  (fp32):
//   c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// m16n8k8 uses (a0, a1) and b0 with the same meaning for k < 8, so one m16n8k16 is exactly
// m16n8k8(a0, a1, b0) followed by m16n8k8(a2, a3, b1): that is the sm_75 path.
//   ldmatrix.x4: lane l gives the address of row l % 8 of matrix l / 8; register i receives
//   matrix i's [l / 4][2 (l % 4) .. +1]; with .trans it receives [2 (l % 4) .. +1][l / 4].
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "kernels/launch.cuh"
// (first: in the emulated build it defines what the CUDA qualifiers mean)
#include "kernels/half_pack.cuh"

namespace awqd::cuda::ptx {

// The residual add of the fused norms (norm.cu, allreduce.cu): v += the 8 fp16 of `residual`,
// `residual` = fp16(v), and v becomes the values stored (the norm is of what the residual stream
// holds, as vLLM's fused_add_rms_norm does).
__device__ __forceinline__ void add_to_residual8(float (&v)[8], uint4& residual) {
  float r[8];
  unpack8(residual, r);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] += r[i];
  const uint4 stored = pack8(v);
  residual = stored;
  unpack8(stored, v);
}

#ifndef AWQD_EMULATE

__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// d += A * B for one 16x8x16 tile, fp16 inputs, fp32 accumulators.
template <bool kSm75>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                          std::uint32_t b0, std::uint32_t b1) {
  if constexpr (kSm75) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b0));
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[2]), "r"(a[3]), "r"(b1));
  } else {
#if AWQD_SM80_CODE
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();  // the sm_80 path is never launched on a device below 8.0
#endif
  }
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}

// 16-byte asynchronous global -> shared copy (sm_80+); copies zeros when !valid (src unread).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
#if AWQD_SM80_CODE
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if AWQD_SM80_CODE
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most `kPending` committed groups of this thread are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if AWQD_SM80_CODE
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Programmatic Dependent Launch (sm_90+): lets the next kernel of the stream, when it was
// launched with the programmatic-serialization attribute (the AWQ GEMMs, and whatever
// launch_pdl() starts), start while this one runs. That kernel still waits (griddepcontrol.wait)
// for this one's completion and memory before it reads anything this one writes; only its launch
// and its reads of inputs this one does not write overlap. A no-op without a dependent and below
// sm_90.
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The other side (sm_90+; a no-op below, and when this kernel was not launched with PDL): blocks
// until the previous kernel on the stream has completed and its memory is visible. A kernel
// launched by launch_pdl() touches nothing that kernel writes (or reads) before this.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

#else  // AWQD_EMULATE: the same operations, computed from the PTX definitions above.

namespace emu_detail {
inline float half_at(std::uint32_t u, int hi) { return hi ? unpack_half2(u).y : unpack_half2(u).x; }
}  // namespace emu_detail

template <bool kSm75>
inline void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                      std::uint32_t b1) {
  struct Frag {
    std::uint32_t a[4];
    std::uint32_t b[2];
  };
  Frag mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  Frag all[32];
  ::awqd::emu::warp_gather(mine, all);
  const int lane = ::awqd::emu::self().lane, g = lane / 4, t = lane % 4;
  auto A = [&](int row, int k) {  // A[row][k]
    const int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    const int kk = k % 8;
    return emu_detail::half_at(all[(row % 8) * 4 + kk / 2].a[reg], kk % 2);
  };
  auto B = [&](int k, int n) {  // B[k][n]
    const int kk = k % 8;
    return emu_detail::half_at(all[n * 4 + kk / 2].b[k >= 8 ? 1 : 0], kk % 2);
  };
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    d[i] = acc;
  }
}

inline void ldmatrix_x4_impl(std::uint32_t (&r)[4], const void* smem_row, bool trans) {
  const void* rows[32];
  ::awqd::emu::warp_gather(smem_row, rows);
  const int lane = ::awqd::emu::self().lane;
  for (int i = 0; i < 4; ++i) {
    __half h[2];
    for (int e = 0; e < 2; ++e) {
      const int row = trans ? 2 * (lane % 4) + e : lane / 4;
      const int col = trans ? lane / 4 : 2 * (lane % 4) + e;
      std::memcpy(&h[e], static_cast<const __half*>(rows[8 * i + row]) + col, 2);
    }
    std::memcpy(&r[i], h, 4);
  }
}
inline void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem_row) {
  ldmatrix_x4_impl(r, smem_row, false);
}
inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem_row) {
  ldmatrix_x4_impl(r, smem_row, true);
}

inline void cp_async_16(void* smem, const void* gmem, bool valid) {
  if (valid) {
    std::memcpy(smem, gmem, 16);
  } else {
    std::memset(smem, 0, 16);
  }
}
inline void cp_async_commit() {}
template <int kPending>
inline void cp_async_wait() {}
inline void launch_dependents() {}
inline void grid_dependency_wait() {}

#endif  // AWQD_EMULATE

}  // namespace awqd::cuda::ptx
