#include <stdexcept>

#include "kernels/common.cuh"

namespace awqd::cuda {

void throw_bad_argument(const char* launcher, const std::string& what) {
  throw std::invalid_argument(std::string(launcher) + ": invalid argument: " + what);
}

}  // namespace awqd::cuda
