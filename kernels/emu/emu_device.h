// What the emulated device (kernels/emu/emu.h) reports to the launchers, which size grids from
// it. Tests may change it, e.g. a small SM count so that split paths run at small sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace awqd::emu {

struct EmuDevice {
  int sm_version = 90;
  int multiprocessors = 4;
  std::size_t smem_per_block_optin = 227 * 1024;
  // Called for every L2 prefetch a kernel issues (ptx::prefetch_l2_bulk), if set.
  std::function<void(const void*, std::uint32_t)> on_l2_prefetch;
};
EmuDevice& device();

}  // namespace awqd::emu
