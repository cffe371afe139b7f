#!/usr/bin/env bash
# AWQ GEMM on the GPU machine (issue 5): GPU tests, SASS census, benchmark against cuBLASLt,
# a short table last. Two steps, because the GPU machine may lack the engine's -dev packages:
#
#   here (no GPU):  scripts/gpu_gemm.sh bundle [--ptx75]
#       builds test_awq_repack, test_awq_gemm and bench_awq_gemm for sm_90a into build-gpu-gemm/
#       (and, with --ptx75, for compute_75 PTX only into build-gpu-gemm-ptx75/) and copies them,
#       with the shared libraries the GPU machine may lack, into .gpu/gemm/ (git-ignored, ~20 MB)
#   GPU machine:    scripts/gpu_gemm.sh run [--ncu] [--no-bench]      (device tool: carry .gpu/gemm)
#       uses .gpu/gemm/ when present, else configures and builds there (-j16, daemon off);
#       runs the tests (the compute_75 PTX build too when bundled: the driver JITs the Turing code
#       and every path must run through it), counts HMMA/LDSM/LDGSTS/LDL in the SASS, runs the
#       benchmark, with --ncu profiles o_proj at M = 1 and 256; prints each step's verdict and
#       the benchmark's summary last.
# Logs under $OUT (default ./out/gpu_gemm): gpu.txt test.log test_ptx75.log sass.txt bench.log
# bench.csv sweep.csv ncu.txt. Every step has a time limit; a failing step does not stop the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
export CUDACXX=${CUDACXX:-$(command -v nvcc)}
targets=(test_awq_repack test_awq_gemm bench_awq_gemm)

configure_and_build() {  # DIR JOBS [cmake args...]
  local dir=$1 jobs=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DAWQD_BUILD_DAEMON=OFF "$@" &&
    cmake --build "$dir" -j "$jobs" --target "${targets[@]}"
}

copy_bins() {  # BUILD_DIR DEST_BIN
  mkdir -p "$2"
  for t in "${targets[@]}"; do cp "$1/bin/$t" "$2/"; done
}

if [[ ${1:-} == bundle ]]; then
  set -e
  configure_and_build build-gpu-gemm 2 -DAWQD_CUDA_ARCHS=90a
  rm -rf .gpu/gemm
  copy_bins build-gpu-gemm .gpu/gemm/bin
  if [[ ${2:-} == --ptx75 ]]; then
    configure_and_build build-gpu-gemm-ptx75 2 -DAWQD_CUDA_ARCHS=75 \
      -DCMAKE_CUDA_FLAGS="-gencode=arch=compute_75,code=compute_75"
    copy_bins build-gpu-gemm-ptx75 .gpu/gemm/bin-ptx75
  fi
  # Shared libraries other than glibc, the compiler runtime and CUDA's (present there).
  mkdir -p .gpu/gemm/lib
  skip='linux-vdso|ld-linux|libc\.so|libm\.so|libstdc\+\+|libgcc_s|libpthread|libdl\.so|librt\.so|libcuda\.so|libcudart|libcublas|libnccl'
  for f in .gpu/gemm/bin*/*; do ldd "$f" | awk '/=>/ {print $3}' | grep -vE "$skip" || true; done |
    sort -u | while read -r lib; do cp -L "$lib" .gpu/gemm/lib/; done
  du -sh .gpu/gemm
  echo "carry .gpu/gemm and run: scripts/gpu_gemm.sh run"
  exit 0
fi

if [[ ${1:-} != run ]]; then
  echo "usage: $0 bundle [--ptx75]   |   $0 run [--ncu] [--no-bench]" >&2
  exit 2
fi
shift
ncu=0 bench=1
for arg in "$@"; do
  case "$arg" in
    --ncu) ncu=1 ;;
    --no-bench) bench=0 ;;
    *) echo "usage: $0 run [--ncu] [--no-bench]" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-$PWD/out/gpu_gemm}
mkdir -p "$OUT"
summary=()
status=0
step() {  # step NAME SECONDS LOG command...
  local name=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local verdict=PASS
  ((rc == 124 || rc == 137)) && verdict="TIMEOUT(${limit}s)"
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAIL(rc=$rc)"
  ((rc != 0)) && status=1
  summary+=("$(printf '%-16s %-14s %4ds  %s' "$name" "$verdict" $((SECONDS - start)) "$log")")
  echo "== $name: $verdict"
  return $rc
}

{
  nvidia-smi
  nvcc --version | tail -2
  git log -1 --format='commit %H %cd' 2>/dev/null
} >"$OUT/gpu.txt" 2>&1

if [[ -x .gpu/gemm/bin/test_awq_gemm ]]; then
  bin=.gpu/gemm/bin
  export LD_LIBRARY_PATH=$PWD/.gpu/gemm/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
  echo "== using the bundled binaries in .gpu/gemm"
else
  bin=build-gpu-gemm/bin
  step build 900 "$OUT/build.log" configure_and_build build-gpu-gemm "${JOBS:-16}" \
    -DAWQD_CUDA_ARCHS="${AWQD_GEMM_ARCH:-90a}" || { tail -30 "$OUT/build.log"; exit 1; }
fi

step tests 1200 "$OUT/test.log" bash -c "$bin/test_awq_repack --gtest_brief=1 && $bin/test_awq_gemm --gtest_brief=1"
grep -E "Failure|failed|rel.* error|unavailable|not tested" "$OUT/test.log" | head -30
if [[ -x .gpu/gemm/bin-ptx75/test_awq_gemm ]]; then
  step tests-ptx75 1200 "$OUT/test_ptx75.log" .gpu/gemm/bin-ptx75/test_awq_gemm --gtest_brief=1
  grep -E "Failure|not tested" "$OUT/test_ptx75.log" | head -10
fi

# SASS census of the GEMM kernels (no GPU time).
if cuobjdump -sass "$bin/test_awq_gemm" >"$OUT/.sass" 2>/dev/null; then
  awk '/Function :/ { name = $3; seen[name] = 1 }
       /HMMA\.16816/ { h16[name]++ } /HMMA\.1688/ { h8[name]++ } /LDSM/ { ldsm[name]++ }
       /LDGSTS/ { ldgsts[name]++ } /LDG\.E[.A-Z0-9]*\.128/ { ldg[name]++ } /LDS\.128/ { lds[name]++ }
       /LOP3/ { lop[name]++ } /HADD2|HMUL2|HFMA2/ { h2[name]++ } /LDL|STL/ { loc[name]++ }
       END { printf "%-10s %-12s %6s %6s %5s %6s %6s %6s %5s %5s %7s\n", "family", "tile", "HMMA16",
                    "HMMA8", "LDSM", "LDGSTS", "LDG128", "LDS128", "LOP3", "HOPS", "LDL/STL"
             for (n in seen) if (n ~ /awq_gemm_kernel|awq_dequantize/) {
               fam = n ~ /Lb1E/ ? "turing" : (n ~ /dequant/ ? "dequant" : "sm80")
               tile = n; sub(/.*TileConfigILi/, "", tile); gsub(/ELi|ELb[01]E|E+vNS.*|Li/, ",", tile)
               if (n ~ /StreamConfig/) { t = n; sub(/.*StreamConfigILi/, "", t); tile = "st" (t + 0) * 8 }
               if (fam == "dequant") tile = "-"  # tile = warps M,N,K, m16 tiles,, min blocks, stages
               printf "%-10s %-12s %6d %6d %5d %6d %6d %6d %5d %5d %7d\n", fam, substr(tile, 1, 12),
                      h16[n], h8[n], ldsm[n], ldgsts[n], ldg[n], lds[n], lop[n], h2[n], loc[n] } }' \
    "$OUT/.sass" | sort >"$OUT/sass.txt"
  rm -f "$OUT/.sass"
  cat "$OUT/sass.txt"
else
  echo "cuobjdump failed" >"$OUT/sass.txt"
fi

if ((bench)); then
  step bench 900 "$OUT/bench.log" "$bin/bench_awq_gemm" --csv "$OUT/bench.csv" \
    --sweep-csv "$OUT/sweep.csv"
fi

if ((ncu)); then
  for m in 1 256; do
    step "ncu-M$m" 300 "$OUT/ncu.txt" ncu --kernel-name regex:awq_gemm_kernel --launch-skip 20 \
      --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section WarpStateStats --section LaunchStats \
      "$bin/bench_awq_gemm" --shapes o --m "$m" --no-sweep
  done
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per" \
    "$OUT/ncu.txt" | head -20
fi

echo
echo "== summary (logs in $OUT)"
printf '%s\n' "${summary[@]}"
grep -hE "^\[  (PASSED|FAILED) " "$OUT/test.log" "$OUT/test_ptx75.log" 2>/dev/null
if ((bench)) && [[ -f $OUT/bench.log ]]; then
  grep -m1 "^# " "$OUT/bench.log"
  sed -n '/^## summary/,$p' "$OUT/bench.log"
fi
exit $status
