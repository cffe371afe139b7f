#!/usr/bin/env bash
# Configures and builds awqd into build/ (Release). Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DAWQD_CUDA_ARCHS=90a
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
  export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
fi
generator=()
command -v ninja >/dev/null && [[ ! -f build/CMakeCache.txt ]] && generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build --parallel "$(nproc)"
