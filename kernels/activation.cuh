// The MLP's gated activation: out = SiLU(gate) * up, elementwise, SiLU(g) = g / (1 + e^-g).
// fp16 in and out, fp32 arithmetic, one rounding. gate and up may be two halves of one fused
// gate_up projection ([rows, 2 * cols]: gate = buf, up = buf + cols, in_stride = 2 * cols) or
// two separate buffers with the same row stride.
//
// Design: a 2-D grid (16-byte column chunks x rows), one 16-byte chunk of each input per
// thread: purely bandwidth bound, 6 bytes moved per output element. Same code on all archs.
// Launch constraints: cols % 8 == 0, strides % 8 == 0, 16-byte aligned pointers.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace awqd::cuda {

// out: [rows, out_stride] (first cols used); gate, up: [rows, in_stride].
void silu_mul(__half* out, int out_stride, const __half* gate, const __half* up, int in_stride,
              int rows, int cols, cudaStream_t stream);

}  // namespace awqd::cuda
