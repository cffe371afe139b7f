// Test helpers: skip (with the reason) when there is no CUDA device or no fixtures.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace awqd::test {

// Number of CUDA devices (0 in a build without CUDA or on a machine without a GPU).
int cuda_devices();

// The fixtures folder: $AWQD_FIXTURES, else ../shared/fixtures beside the project root.
std::filesystem::path fixtures_dir();

// fixtures_dir()/relative when it exists, else an empty path.
std::filesystem::path fixture(const std::string& relative);

// Runs a shell command, appends its standard output to `out`; returns its exit status (pclose's
// status: 0 on success), -1 when it could not be started.
int run_command(const std::string& command, std::string& out);

}  // namespace awqd::test

#define AWQD_REQUIRE_CUDA()                                                         \
  do {                                                                              \
    if (::awqd::test::cuda_devices() == 0) GTEST_SKIP() << "no CUDA device present"; \
  } while (0)

// Skips unless at least n CUDA devices are present (tensor-parallel and replica tests).
#define AWQD_REQUIRE_GPUS(n)                                                                      \
  do {                                                                                            \
    if (::awqd::test::cuda_devices() < (n))                                                       \
      GTEST_SKIP() << "needs " << (n) << " CUDA devices, found " << ::awqd::test::cuda_devices(); \
  } while (0)

// Declares `var` as the absolute path of a fixture, skipping the test when it is absent.
#define AWQD_REQUIRE_FIXTURE(var, relative)                                             \
  const std::filesystem::path var = ::awqd::test::fixture(relative);                    \
  if (var.empty())                                                                      \
  GTEST_SKIP() << "fixture " << (relative) << " not found under "                       \
               << ::awqd::test::fixtures_dir() << " (set AWQD_FIXTURES)"

// Declares `var` as the awqd executable to run: $AWQD_BINARY, else the build's own (`built`),
// skipping the test when neither exists (a test binary carried to another machine).
#define AWQD_REQUIRE_BINARY(var, built)                                                           \
  const char* var##_env = std::getenv("AWQD_BINARY");                                             \
  const std::string var = var##_env != nullptr && *var##_env != '\0' ? var##_env : (built);       \
  if (!std::filesystem::exists(var))                                                              \
  GTEST_SKIP() << "the awqd executable " << var << " does not exist (set AWQD_BINARY)"
