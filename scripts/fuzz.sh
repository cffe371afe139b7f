#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into build-fuzz/ and runs each for
# SECONDS (default 60) under ctest. Any crash fails the run and leaves the input in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAWQD_FUZZ=ON \
  -DAWQD_CUDA=OFF -DAWQD_BUILD_DAEMON=OFF -DAWQD_FUZZ_SECONDS="$seconds" >/dev/null
cmake --build build-fuzz --parallel "$(nproc)"
cd build-fuzz
ctest --output-on-failure -L fuzz
