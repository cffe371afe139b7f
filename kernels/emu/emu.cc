// The fiber scheduler behind kernels/emu/emu.h. One OS thread; each CUDA thread of the running
// block is a fiber with its own stack; a fiber gives up the processor only inside yield().
// Context switch: a few lines of x86-64 assembly (System V ABI: save the callee-saved registers
// and the stack pointer), ~100x faster than swapcontext, which makes a system call per switch.
#include "kernels/emu/emu.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#if !defined(__x86_64__)
#error "the kernel emulator's context switch is written for x86-64"
#endif

extern "C" void awqd_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl awqd_emu_switch
.type awqd_emu_switch,@function
awqd_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size awqd_emu_switch, .-awqd_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");

namespace awqd::emu {

uint3 g_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;

namespace {

constexpr std::size_t kStackBytes = 256 * 1024;

struct Fiber {
  void* sp = nullptr;
  std::unique_ptr<unsigned char[]> stack;
  EmuThread thread;
  bool done = false;
};

struct Warp {
  int size = 0;
  int arrived = 0;
  unsigned generation = 0;
  alignas(16) unsigned char slot[32][64];
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int current = -1;
  void* scheduler_sp = nullptr;
  const std::function<void()>* body = nullptr;
  int live = 0;
  int block_arrived = 0;
  unsigned block_generation = 0;
  std::uint64_t progress = 0;  // bumped whenever a fiber gets past a barrier or finishes
  std::vector<unsigned char> smem;
};

BlockRun* g_run = nullptr;
EmuDevice g_device;

[[noreturn]] void fiber_entry() {
  BlockRun& run = *g_run;
  (*run.body)();
  Fiber& f = run.fibers[run.current];
  f.done = true;
  --run.live;
  ++run.progress;
  // A finished thread no longer counts toward the block barrier.
  if (run.block_arrived > 0 && run.block_arrived == run.live) {
    run.block_arrived = 0;
    ++run.block_generation;
  }
  awqd_emu_switch(&f.sp, run.scheduler_sp);
  std::abort();  // never resumed
}

void* initial_stack(unsigned char* stack) {
  // Top of the stack, 16-byte aligned. Layout from the top: a zero "return address" for
  // fiber_entry (so that its frame is ABI-aligned: rsp % 16 == 8 at entry), fiber_entry's
  // address (consumed by `ret`), then six zero registers (popped by awqd_emu_switch).
  auto top = reinterpret_cast<std::uintptr_t>(stack + kStackBytes) & ~std::uintptr_t{15};
  auto* p = reinterpret_cast<void**>(top);
  *--p = nullptr;
  *--p = reinterpret_cast<void*>(&fiber_entry);
  for (int i = 0; i < 6; ++i) *--p = nullptr;
  return p;
}

[[noreturn]] void deadlock(const char* what) {
  std::fprintf(stderr,
               "awqd emu: deadlock in block (%u,%u,%u): %s can never complete (a barrier or "
               "warp collective that some threads of the block/warp do not reach)\n",
               g_block_idx.x, g_block_idx.y, g_block_idx.z, what);
  std::abort();
}

}  // namespace

const EmuThread& self() { return g_run->fibers[g_run->current].thread; }

EmuDevice& device() { return g_device; }

void yield() {
  BlockRun& run = *g_run;
  awqd_emu_switch(&run.fibers[run.current].sp, run.scheduler_sp);
}

void block_barrier() {
  BlockRun& run = *g_run;
  const unsigned generation = run.block_generation;
  ++run.progress;
  if (++run.block_arrived == run.live) {
    run.block_arrived = 0;
    ++run.block_generation;
    return;
  }
  while (run.block_generation == generation) yield();
}

void warp_barrier() {
  BlockRun& run = *g_run;
  Warp& w = run.warps[run.fibers[run.current].thread.warp];
  const unsigned generation = w.generation;
  ++run.progress;
  if (++w.arrived == w.size) {
    w.arrived = 0;
    ++w.generation;
    return;
  }
  while (w.generation == generation) yield();
}

unsigned char* warp_slot(int lane) {
  BlockRun& run = *g_run;
  return run.warps[run.fibers[run.current].thread.warp].slot[lane];
}

unsigned char* dynamic_smem() { return g_run->smem.data(); }

void launch(dim3 grid, dim3 block, std::size_t smem_bytes, const std::function<void()>& body) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024) {
    std::fprintf(stderr, "awqd emu: invalid block size %d\n", threads);
    std::abort();
  }
  BlockRun run;
  run.body = &body;
  run.fibers.resize(threads);
  run.warps.resize((threads + 31) / 32);
  for (int w = 0; w < static_cast<int>(run.warps.size()); ++w) {
    run.warps[w].size = std::min(32, threads - 32 * w);
  }
  for (auto& f : run.fibers) f.stack.reset(new unsigned char[kStackBytes]);
  run.smem.resize(smem_bytes + 16);
  BlockRun* outer = g_run;
  g_run = &run;
  g_grid_dim = grid;
  g_block_dim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        g_block_idx = make_uint3(bx, by, bz);
        std::memset(run.smem.data(), 0xFF, run.smem.size());
        for (int t = 0; t < threads; ++t) {
          Fiber& f = run.fibers[t];
          f.done = false;
          f.thread.tid = make_uint3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          f.thread.lane = t % 32;
          f.thread.warp = t / 32;
          f.sp = initial_stack(f.stack.get());
        }
        for (auto& w : run.warps) w.arrived = 0;
        run.live = threads;
        run.block_arrived = 0;
        while (run.live > 0) {
          const std::uint64_t before = run.progress;
          for (int t = 0; t < threads; ++t) {
            if (run.fibers[t].done) continue;
            run.current = t;
            awqd_emu_switch(&run.scheduler_sp, run.fibers[t].sp);
          }
          run.current = -1;
          if (run.live > 0 && run.progress == before) {
            deadlock(run.block_arrived > 0 ? "__syncthreads" : "a warp collective");
          }
        }
      }
    }
  }
  g_run = outer;
}

}  // namespace awqd::emu
