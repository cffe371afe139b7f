#!/usr/bin/env bash
# Issue 6 on a GPU machine (H100/H200: nvcc 13, cmake, gcc, GoogleTest; no hiredis/SQLite).
# From the repository root:   scripts/gpu_attn.sh [all|test|sanitize|bench]     (default all)
# Logs under $OUT (else ./gpu_attn_out). `all` takes about 6-10 minutes on an H100 box; where one
# command may run at most 10 minutes, run `test`, then `sanitize`, then `bench` on the same warm
# machine (each rebuilds nothing that is already built in build-gpu/).
#
#   1. configures build-gpu/ (sm_90a only, daemon off) and builds the kernel tests and the
#      benchmark, -j16;
#   2. writes the compiler's resource report (registers, spills, shared memory) and a SASS
#      census of the kernels (HMMA, LDSM, LDGSTS, 16-byte loads) to $OUT;
#   3. runs the GPU kernel tests (test_ops, test_attention: both the sm_80+ and the forced sm_75
#      path, test_sampling_gpu), then the small sweep again under compute-sanitizer (memcheck,
#      racecheck on the attention kernels);
#   4. runs bench_attention (decode GB/s, prefill TFLOP/s, fused ops GB/s, sampler us);
#   5. prints a short table last: each step PASS/FAIL, then the benchmark tables.
# Every step has a time limit, so nothing hangs; a failing step does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
case $mode in
  all | test | sanitize | bench) ;;
  *) echo "usage: $0 [all|test|sanitize|bench]" >&2; exit 2 ;;
esac
want() { [[ $mode == all || $mode == "$1" ]]; }
OUT=${OUT:-$PWD/gpu_attn_out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
export CUDACXX=${CUDACXX:-$(command -v nvcc)}
summary=()

step() {  # step NAME SECONDS command...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local verdict=PASS
  ((rc == 124 || rc == 137)) && verdict="TIMEOUT(${limit}s)"
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAIL(rc=$rc)"
  local tests
  tests=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$OUT/$name.log" | tr -s ' ' | paste -sd' ')
  summary+=("$(printf '%-22s %-14s %4ds  %s' "$name" "$verdict" $((SECONDS - start)) "$tests")")
  echo "== $name: $verdict"
  if [[ $verdict != PASS ]]; then tail -n 25 "$OUT/$name.log"; fi
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
  >"$OUT/nvidia-smi.txt" 2>&1 || true
git log -1 --format='%H %cd' >"$OUT/commit.txt" 2>/dev/null || true

targets=(test_ops test_attention test_sampling_gpu bench_attention)
step configure 300 cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DAWQD_BUILD_DAEMON=OFF -DAWQD_CUDA_ARCHS=90a &&
  step build 480 cmake --build build-gpu -j"${JOBS:-16}" --target "${targets[@]}"
built=$?

if ((built == 0)); then
  # Compiler resource report and SASS census (no GPU time).
  lib=build-gpu/kernels/libawqd_kernels.a
  cuobjdump --dump-resource-usage "$lib" >"$OUT/resource_usage.txt" 2>&1 || true
  if cuobjdump -sass "$lib" >"$OUT/kernels.sass" 2>/dev/null; then
    awk '/Function :/ { name = $3 }
         /HMMA/ { hmma[name]++ } /LDSM/ { ldsm[name]++ } /LDGSTS/ { ldgsts[name]++ }
         /LDG\.E\.128/ { ldg128[name]++ } /LDL|STL/ { local_[name]++ }
         END { printf "%-90s %6s %6s %7s %8s %6s\n", "kernel", "HMMA", "LDSM", "LDGSTS", "LDG.128", "LDL/STL"
               for (n in hmma) seen[n] = 1; for (n in ldg128) seen[n] = 1; for (n in ldgsts) seen[n] = 1
               for (n in seen) printf "%-90s %6d %6d %7d %8d %6d\n", substr(n, 1, 90), hmma[n], ldsm[n], ldgsts[n], ldg128[n], local_[n] }' \
      "$OUT/kernels.sass" >"$OUT/sass_census.txt"
  fi

  bin=build-gpu/bin
  if want test; then
    step test_ops 120 "$bin/test_ops"
    step test_attention 240 "$bin/test_attention"
    step test_sampling_gpu 240 "$bin/test_sampling_gpu"
  fi
  if want sanitize && command -v compute-sanitizer >/dev/null; then
    export AWQD_TEST_QUICK=1
    step memcheck_ops 180 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test_ops"
    step memcheck_attention 240 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test_attention"
    step memcheck_sampling 240 compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test_sampling_gpu"
    step racecheck_attention 300 compute-sanitizer --tool racecheck --error-exitcode 3 \
      "$bin/test_attention" --gtest_filter='*Decode*:*Prefill*'
    unset AWQD_TEST_QUICK
  fi
  if want bench; then
    step bench 360 "$bin/bench_attention" "$OUT/bench_attention.md"
  fi
fi

echo
echo "==================== gpu_attn summary ($(cat "$OUT/commit.txt" 2>/dev/null | cut -c1-12)) ===================="
head -2 "$OUT/nvidia-smi.txt" 2>/dev/null | tail -1
printf '%s\n' "${summary[@]}"
[[ -f $OUT/sass_census.txt ]] && { echo; cat "$OUT/sass_census.txt"; }
[[ -f $OUT/bench_attention.md ]] && { echo; cat "$OUT/bench_attention.md"; }
printf '%s\n' "${summary[@]}" | grep -qv ' PASS ' && exit 1
exit 0
