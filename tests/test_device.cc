// The device query works and reports a sane device (GPU machine only).
#include <gtest/gtest.h>

#include "kernels/device.cuh"
#include "tests/test_support.h"

TEST(Device, ReportsComputeCapabilityAndMemory) {
  AWQD_REQUIRE_CUDA();
  const auto info = awqd::cuda::device_info(0);
  EXPECT_GE(info.sm_major * 10 + info.sm_minor, 75) << info.name;
  EXPECT_GT(info.total_memory, std::size_t{1} << 30);
  EXPECT_GT(info.multiprocessors, 0);
}

TEST(Device, CountIsZeroOrMoreWithoutThrowing) {
  EXPECT_GE(awqd::cuda::device_count(), 0);
}
