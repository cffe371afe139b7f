// What the emulated device (kernels/emu/emu.h) reports to the launchers, which size grids from
// it. Tests may change it, e.g. a small SM count so that split paths run at small sizes.
#pragma once

#include <cstddef>

namespace awqd::emu {

struct EmuDevice {
  int sm_version = 90;
  int multiprocessors = 4;
  std::size_t smem_per_block_optin = 227 * 1024;
};
EmuDevice& device();

}  // namespace awqd::emu
