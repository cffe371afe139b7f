#!/usr/bin/env bash
# AWQ GEMM on the GPU machine (issue 5): builds only the kernel/test/bench targets, runs the GPU
# tests, checks the SASS, times the kernels against cuBLASLt, prints a short table last.
#
#   scripts/gpu_gemm.sh [--ptx75] [--ncu] [--no-bench]
#     --ptx75     also build for compute_75 PTX only and run the tests there (the driver JITs the
#                 Turing code for this GPU; the auto path must then pick the Turing kernels)
#     --ncu       profile two kernels with Nsight Compute (o_proj at M = 1 and M = 256)
#     --no-bench  tests and SASS only
# Environment: OUT (logs; default ./out/gpu_gemm), AWQD_GEMM_ARCH (default 90a), JOBS (default 16).
# Needs nvcc, cmake, ninja, GoogleTest, nlohmann-json, PCRE2; not hiredis/SQLite (no daemon).
# Writes under $OUT: gpu.txt build.log test.log sass.txt bench.log bench.csv sweep.csv [ncu.txt].
set -uo pipefail
cd "$(dirname "$0")/.."

ptx75=0 ncu=0 bench=1
for arg in "$@"; do
  case "$arg" in
    --ptx75) ptx75=1 ;;
    --ncu) ncu=1 ;;
    --no-bench) bench=0 ;;
    *) echo "usage: $0 [--ptx75] [--ncu] [--no-bench]" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-$PWD/out/gpu_gemm}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
export CUDACXX=${CUDACXX:-$(command -v nvcc)}
arch=${AWQD_GEMM_ARCH:-90a}
jobs=${JOBS:-16}
status=0

{ nvidia-smi; nvcc --version; cmake --version | head -1; } > "$OUT/gpu.txt" 2>&1

build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DAWQD_BUILD_DAEMON=OFF "$@" \
    >> "$OUT/build.log" 2>&1 &&
    cmake --build "$dir" -j "$jobs" --target test_awq_repack test_awq_gemm bench_awq_gemm \
      >> "$OUT/build.log" 2>&1
}

echo "== build ($arch)" | tee -a "$OUT/build.log"
if ! build build-gpu -DAWQD_CUDA_ARCHS="$arch"; then
  tail -40 "$OUT/build.log"
  echo "gpu_gemm: build failed (full log: $OUT/build.log)"
  exit 1
fi

echo "== tests ($arch)"
timeout 900 build-gpu/bin/test_awq_repack --gtest_brief=1 > "$OUT/test.log" 2>&1 || status=1
timeout 1200 build-gpu/bin/test_awq_gemm --gtest_brief=1 >> "$OUT/test.log" 2>&1 || status=1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|got .*ref|rel L2" "$OUT/test.log" | head -40

if [[ $ptx75 == 1 ]]; then
  echo "== build + tests (compute_75 PTX, JIT on this GPU)" | tee -a "$OUT/build.log"
  if build build-gpu-ptx75 -DAWQD_CUDA_ARCHS=75 \
      -DCMAKE_CUDA_FLAGS="-gencode=arch=compute_75,code=compute_75"; then
    echo "== compute_75 PTX build" >> "$OUT/test.log"
    # The sm_75 SASS cannot load on this GPU, only the PTX: every path runs the Turing kernels.
    CUDA_CACHE_MAXSIZE=1073741824 timeout 1200 build-gpu-ptx75/bin/test_awq_gemm --gtest_brief=1 \
      >> "$OUT/test.log" 2>&1 || status=1
    tail -5 "$OUT/test.log"
  else
    tail -20 "$OUT/build.log"
    status=1
  fi
fi

echo "== SASS ($arch)"
{
  for f in build-gpu/kernels/CMakeFiles/awqd_kernels.dir/awq_gemm_sm*.cu.o; do
    cuobjdump -sass "$f" > "$OUT/.sass" 2>/dev/null || continue
    printf "%-22s" "$(basename "$f" .cu.o)"
    for ins in HMMA.16816 HMMA.1688 LDSM LDGSTS LDG.E.128 LDS.128 STS.128 LOP3 HADD2 HMUL2 HFMA2 LDL STL; do
      printf " %s=%d" "$ins" "$(grep -c "$ins" "$OUT/.sass")"
    done
    echo
  done
  rm -f "$OUT/.sass"
} | tee "$OUT/sass.txt"

if [[ $bench == 1 ]]; then
  echo "== bench"
  timeout 900 build-gpu/bin/bench_awq_gemm --csv "$OUT/bench.csv" --sweep-csv "$OUT/sweep.csv" \
    > "$OUT/bench.log" 2>&1 || { status=1; tail -20 "$OUT/bench.log"; }
fi

if [[ $ncu == 1 ]]; then
  echo "== ncu"
  for m in 1 256; do
    timeout 300 ncu --kernel-name regex:awq_gemm_kernel --launch-skip 20 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section WarpStateStats --section LaunchStats \
      build-gpu/bin/bench_awq_gemm --shapes o --m "$m" --no-sweep >> "$OUT/ncu.txt" 2>&1 || status=1
  done
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per" \
    "$OUT/ncu.txt" | head -24
fi

echo
echo "== summary (logs in $OUT)"
grep -E "^\[  (PASSED|FAILED) " "$OUT/test.log" || echo "tests: no result line (crash?)"
if [[ $bench == 1 && -f "$OUT/bench.log" ]]; then
  head -1 "$OUT/bench.log"
  sed -n '/^## summary/,$p' "$OUT/bench.log"
fi
exit $status
