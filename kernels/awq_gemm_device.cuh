// Device building blocks of the AWQ GEMM paths: int4 -> fp16 dequantization of the tile layout
// (kernels/awq_layout.cuh), and thin wrappers over the PTX instructions the kernels use
// (mma.sync m16n8k16 / m16n8k8, ldmatrix, cp.async). Included by .cu files, and by the CPU
// emulation test (tests/emu/cuda_emulation.h), which defines AWQD_KERNEL_EMULATION and supplies
// its own versions of the PTX wrappers, so CI runs the kernel's real code without a GPU.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace awqd::cuda::awq_device {

#ifndef AWQD_KERNEL_EMULATION
// ---- fp16x2 arithmetic on raw 32-bit registers ----
// Explicit .rn keeps ptxas from contracting the pair into an fma (which would round differently
// from the CPU reference and the dequantize kernel).
__device__ __forceinline__ std::uint32_t hsub2(std::uint32_t a, std::uint32_t b) {
  std::uint32_t d;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
__device__ __forceinline__ std::uint32_t hmul2(std::uint32_t a, std::uint32_t b) {
  std::uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
__device__ __forceinline__ std::uint32_t hfma2(std::uint32_t a, std::uint32_t b, std::uint32_t c) {
  std::uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
#endif  // AWQD_KERNEL_EMULATION

// 1024 + (the 4-bit values at bits 0..3 and 16..19 of w), as two fp16 numbers: 0x6400 is 1024.0,
// whose ulp is 1, so OR-ing a 4-bit integer into the mantissa adds it exactly. Compiles to LOP3.
__device__ __forceinline__ std::uint32_t int4_pair_plus_1024(std::uint32_t w) {
  return (w & 0x000F000Fu) | 0x64006400u;
}

// (w & Mask) | bits in one LOP3: ptxas does not fuse an AND and an OR of two immediates, and a
// LOP3 takes one immediate, so `bits` comes in a register.
template <std::uint32_t Mask>
__device__ __forceinline__ std::uint32_t and_or(std::uint32_t w, std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  std::uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(w), "n"(Mask), "r"(bits));
  return d;
#else
  return (w & Mask) | bits;
#endif
}

// From z2 = (1024 + z, 1024 + z): (-(64 + z), -(64 + z)) as fp16x2. 64 + z is exact (ulp 1/16):
// 0x5400 is 64.0 and z sits at mantissa bits 4..7.
__device__ __forceinline__ std::uint32_t minus_64_minus_z(std::uint32_t z2) {
  return ((z2 & 0x000F000Fu) << 4) | 0xD400D400u;
}

// Per-group constants of one lane: for its 8 columns n = 8i + g of a stripe,
//   s2[i] = (s, s), z2[i] = (1024 + z, 1024 + z) and nz[i] = (-(64 + z), -(64 + z)) as fp16x2.
// `scales` holds the 8 fp16 scales of those columns (i = 0..7), `zeros` the 8 zero points
// (nibble i), as laid out by awq_repack.
struct GroupConsts {
  std::uint32_t s2[8];
  std::uint32_t z2[8];
  std::uint32_t nz[8];
};
__device__ __forceinline__ void load_group_consts(uint4 scales, std::uint32_t zeros,
                                                  GroupConsts& c) {
  const std::uint32_t sw[4] = {scales.x, scales.y, scales.z, scales.w};
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    c.s2[2 * a] = __byte_perm(sw[a], 0, 0x1010);                    // low half, twice
    c.s2[2 * a + 1] = __byte_perm(sw[a], 0, 0x3232);                // high half, twice
    const std::uint32_t z = int4_pair_plus_1024(zeros >> (4 * a));  // (z_a, z_{a+4})
    c.z2[a] = __byte_perm(z, 0, 0x1010);
    c.z2[a + 4] = __byte_perm(z, 0, 0x3232);
    c.nz[a] = minus_64_minus_z(c.z2[a]);
    c.nz[a + 4] = minus_64_minus_z(c.z2[a + 4]);
  }
}

// Word j of a lane's tile fragment -> the exact integers q - z as fp16 (|q - z| <= 15), in the
// B registers of n8-tiles 2j and 2j+1:
//   b[h][0]: k = 2t, 2t+1;  b[h][1]: k = 2t+8, 2t+9;  column 16j + 8h + g;
// from the nibble pairs at bits (0, 16), (4, 20), (8, 24), (12, 28) of w. The pairs at bits 0
// and 8 (of w and w >> 8) become 1024 + q, minus (1024 + z); the pairs at bits 4 and 12, masked
// in place, become 1024 + 16 q, and (1024 + 16 q) / 16 - (64 + z) = q - z in one fma (the
// division by 16 is exact, as is the integer result), which saves a shift per pair. Per word:
// 1 shift, 4 LOP3, 2 HADD2, 2 HFMA2.
// NzInRegisters = false derives nz from z2 here (2 more instructions per word) for a kernel
// short of registers (the Turing stream tiles), so GroupConsts::nz is never kept.
template <bool NzInRegisters = true>
__device__ __forceinline__ void dequant_word_unscaled(std::uint32_t w, const GroupConsts& c, int j,
                                                      std::uint32_t (&b)[2][2]) {
  const std::uint32_t magic = 0x64006400u, sixteenth = 0x2C002C00u;  // 1024, 1/16
  const std::uint32_t hi = w >> 8;
  const std::uint32_t nz_lo = NzInRegisters ? c.nz[2 * j] : minus_64_minus_z(c.z2[2 * j]);
  const std::uint32_t nz_hi = NzInRegisters ? c.nz[2 * j + 1] : minus_64_minus_z(c.z2[2 * j + 1]);
  b[0][0] = hsub2(and_or<0x000F000Fu>(w, magic), c.z2[2 * j]);
  b[0][1] = hfma2(and_or<0x00F000F0u>(w, magic), sixteenth, nz_lo);
  b[1][0] = hsub2(and_or<0x000F000Fu>(hi, magic), c.z2[2 * j + 1]);
  b[1][1] = hfma2(and_or<0x00F000F0u>(hi, magic), sixteenth, nz_hi);
}

// The same, times the columns' fp16 scales: W = (q - z) * s, with q - z exact and one rounding in
// the product (4 HMUL2 more: 13 instructions per 8 weights; was 19 before run 38: ptxas did not
// fuse the mask and the OR, and there were 3 shifts per word).
template <bool NzInRegisters = true>
__device__ __forceinline__ void dequant_word(std::uint32_t w, const GroupConsts& c, int j,
                                             std::uint32_t (&b)[2][2]) {
  dequant_word_unscaled<NzInRegisters>(w, c, j, b);
  b[0][0] = hmul2(b[0][0], c.s2[2 * j]);
  b[0][1] = hmul2(b[0][1], c.s2[2 * j]);
  b[1][0] = hmul2(b[1][0], c.s2[2 * j + 1]);
  b[1][1] = hmul2(b[1][1], c.s2[2 * j + 1]);
}

#ifndef AWQD_KERNEL_EMULATION
// ---- global memory ----
// 16 bytes of weights read once per GEMM: through the non-coherent path, not kept in L1 (so the
// activations and scales stay there).
__device__ __forceinline__ uint4 ldg_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// ---- Programmatic Dependent Launch (sm_90+; no-ops below) ----
// A kernel launched with the programmatic-serialization attribute may start while the previous
// kernel on the stream is still running. Before grid_dependency_wait() it may only read memory
// that kernel does not write (the weights); everything else (activations, workspace, outputs)
// comes after. allow_dependents_launch() lets the next such kernel start early in turn.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Requests the 128-byte line of global memory at p into L1 (no register, nothing waits on it).
__device__ __forceinline__ void prefetch_l1(const void* p) {
  asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

// The sum of v over the warp's 32 lanes, in every lane: a butterfly of 5 xor shuffles (each
// lane adds the same two values in each step, so all end with the same bits).
__device__ __forceinline__ float warp_sum_f32(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// ---- thread-block clusters (sm_90+; the launcher uses them only there) ----
// Every thread of every block of the cluster arrives; memory written before is visible to the
// cluster's blocks after (release / acquire).
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" :::
                   "memory");
#else
  __trap();
#endif
}
// The float at shared-memory address `addr` (of this block's layout) in block `rank` of the
// cluster.
__device__ __forceinline__ float ld_cluster_f32(std::uint32_t addr, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  std::uint32_t remote;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
#else
  __trap();
  return 0.0f;
#endif
}

// ---- tensor cores ----
// D += A * B, A 16x16 row-major (4 regs, ldmatrix.x4 order), B 16x8 "col" (2 regs), fp32 C/D.
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4],
                                             std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// The same product as two m16n8k8 (sm_75): A regs {0,1} hold k 0..7, {2,3} k 8..15.
__device__ __forceinline__ void mma_m16n8k16_as_2x_k8(float (&d)[4], const std::uint32_t (&a)[4],
                                                      std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(b0));
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[2]), "r"(a[3]), "r"(b1));
#else
  __trap();
#endif
}

// ---- shared memory ----
__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 fp16 matrices; lane l gives the row address of matrix l/8, row l%8 (sm_75+).
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#else
  __trap();
#endif
}

// 16 bytes global -> shared, asynchronously, bypassing L1 (sm_80+). valid == false writes zeros
// and reads nothing.
__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
#endif
}
#endif  // AWQD_KERNEL_EMULATION

}  // namespace awqd::cuda::awq_device
