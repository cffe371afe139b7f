#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the bundle scripts/gpu_bundle.sh made here:
#   run(command="scripts/gpu_run.sh tests", carry=[".gpu/bundle.tar.xz", ".gpu/fixtures",
#       ".gpu/quant/llama-13m-awq"])                            GPU tests (kernels, engine, HF)
#   run(command="scripts/gpu_run.sh bench", carry=[".gpu"])   kernel benchmarks
#   run(command="scripts/gpu_run.sh engine", carry=[".gpu"])  engine benchmarks (awqd bench on
#       awqd synth --like llama3-8b; AWQD_WORKLOADS, AWQD_LIKE, AWQD_BENCH_ARGS override)
# Every step has a time limit and a verdict; a failing step does not stop the rest. Logs go to
# $OUT (at most 8 files come back): info.txt, tests.log, bench_gemm.log, bench_attention.md,
# engine.log; a summary table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-tests}
OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/bundle.tar.xz
bin=/tmp/awqd/bin
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures
summary=()
status=0

step() {  # step NAME SECONDS LOG command...
  local name=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS
  echo "######## $name: $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local verdict=PASS
  ((rc == 124 || rc == 137)) && verdict="TIMEOUT(${limit}s)"
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAIL(rc=$rc)"
  ((rc != 0)) && status=1
  local tests
  tests=$(tail -n 400 "$log" | grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' | tr -s ' ' | paste -sd' ')
  summary+=("$(printf '%-22s %-14s %4ds  %s' "$name" "$verdict" $((SECONDS - start)) "$tests")")
  echo "== $name: $verdict ($((SECONDS - start)) s)"
  return 0
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  git log -1 --format='commit %H %cd' 2>/dev/null
  date -u
} >>"$OUT/info.txt" 2>&1

case $mode in
  tests)
    log=$OUT/tests.log
    for t in test_device test_awq_repack test_ops test_attention test_sampling_gpu test_awq_gemm test_cuda_engine; do
      step "$t" 400 "$log" "$bin/$t" --gtest_brief=1
    done
    step generate 120 "$log" "$bin/awqd" generate --device cuda --model .gpu/fixtures/llama-13m \
      --prompt "It is a truth universally acknowledged, that" --temperature 0 --max-tokens 48 --json
    # Greedy ids against HF transformers on the same weights: the fp16 fixture and, when carried
    # (.gpu/quant/llama-13m-awq from scripts/gpu_quant_prep.sh), its awqd quantize output.
    for model in .gpu/fixtures/llama-13m .gpu/quant/llama-13m-awq; do
      [[ -d $model ]] || continue
      step "hf-greedy-$(basename "$model")" 300 "$log" python3 scripts/hf_greedy.py --model "$model" \
        --awqd "$bin/awqd" --reference .gpu/fixtures/llama-13m/reference-outputs.json
    done
    grep -E "Failure|FAILED|error|agree_before_near_tie|top-1 agreement|tokens equal HF" "$log" | head -40
    ;;
  bench)
    # With the sweep of forced tiles and split-K factors (tuning data for kernels/awq_gemm.cu).
    step bench_gemm 420 "$OUT/bench_gemm.log" "$bin/bench_awq_gemm"
    step bench_attention 300 "$OUT/bench_attention.log" "$bin/bench_attention" "$OUT/bench_attention.md"
    sed -n '/^## sweep: best/,/^$/p' "$OUT/bench_gemm.log"
    sed -n '/^## summary/,$p' "$OUT/bench_gemm.log"
    cat "$OUT/bench_attention.md" 2>/dev/null
    ;;
  engine)
    # End-to-end engine benchmarks on a random-weight Llama-3-8B-shaped AWQ checkpoint, with the
    # PyTorch baseline of ../shared/bench (copied into .gpu/bench) on the same card.
    log=$OUT/engine.log
    step synth 300 "$log" "$bin/awqd" synth --like "${AWQD_LIKE:-llama3-8b}" --out /tmp/model
    du -sh /tmp/model >>"$log" 2>&1
    step generate 120 "$log" "$bin/awqd" generate --device cuda --model /tmp/model --prompt "hello world" \
      --max-tokens 32 --temperature 0 --json
    # One benchmark per line: a name, then awqd bench arguments.
    workloads=${AWQD_WORKLOADS:-"decode-1 --workload decode-1
decode-64 --workload custom --num-prompts 64 --input-len 512 --output-len 128
prefill --workload custom --num-prompts 256 --input-len 512 --output-len 1
bulk-512-256 --workload bulk-512-256
shared-prefix --workload shared-prefix"}
    while read -r name args; do
      [[ -z $name ]] && continue
      # shellcheck disable=SC2086
      step "bench-$name" 420 "$log" "$bin/awqd" bench --model /tmp/model --quiet --out "$OUT/bench-$name.json" $args
    done <<<"$workloads"
    if [[ ${AWQD_TORCH:-0} == 1 && -f .gpu/bench/torch_baseline.py ]]; then
      step torch-int4 300 "$log" env MODE=int4 BATCHES=1,64 CTX=640 python3 .gpu/bench/torch_baseline.py
    fi
    grep -E "^(workload|model|time|requests|decode|TTFT|batch|preemptions)|tokens/s|error" "$log" | head -60
    ;;
  *)
    echo "usage: $0 tests|bench|engine" >&2
    exit 2
    ;;
esac

echo
echo "==================== summary ($mode) ===================="
head -2 "$OUT/info.txt" | tail -1
printf '%s\n' "${summary[@]}"
exit $status
