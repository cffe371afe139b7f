#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the bundle scripts/gpu_bundle.sh made here:
#   run(command="scripts/gpu_run.sh tests", carry=[".gpu/bundle.tar.xz", ".gpu/fixtures",
#       ".gpu/quant/llama-13m-awq"])                            GPU tests (kernels, engine, HF)
#   run(command="scripts/gpu_run.sh bench", carry=[".gpu"])   kernel benchmarks (AWQD_GEMM_ARGS:
#       bench_awq_gemm's arguments, e.g. KxN shards and --sweep-pdl)
#   run(command="scripts/gpu_run.sh engine", carry=[".gpu"])  engine benchmarks (awqd bench on
#       awqd synth --like llama3-8b; AWQD_WORKLOADS, AWQD_LIKE, AWQD_BENCH_ARGS override)
#   run(command="scripts/gpu_run.sh prof", carry=[".gpu"])   the step pipeline and --profile (issue
#       8): test_engine_pipeline (its tensor-parallel cases need 2 GPUs), then awqd bench --profile
#       on llama3-8b with async_output on and off
#   run(command="scripts/gpu_run.sh ab .gpu/old/awqd", carry=[".gpu/slim.tar.xz", ".gpu/old"])
#       a change against an earlier awqd binary on the same card: GPU tests ($AWQD_AB_TESTS, by
#       default those of the attention path and the engine), the decode rows of the kernel
#       benchmarks the bundle carries (bench_attention, bench_awq_gemm), then decode-1 and
#       64-sequence decode on awqd synth --like llama3-8b, the two binaries alternated twice
#       (AWQD_BUNDLE picks the tarball, default .gpu/bundle.tar.xz; more knobs in the ab case)
#   run(command="scripts/gpu_run.sh tp", carry=[".gpu"], kind="nvidia-h100-x2" or "nvidia-h100-x4")
#       tensor parallelism and replicas (issue 9): multi-GPU tests, then benchmarks; what runs
#       depends on the GPU count (see the tp case below). Steps share a deadline
#       ($AWQD_DEADLINE_S, default 560 s) so the whole command ends inside the 600 s limit.
# Every step has a time limit and a verdict; a failing step does not stop the rest. Logs go to
# $OUT (at most 8 files come back; past 7, 0-all.tar.xz holds them all): info.txt, tests.log,
# bench_gemm.log, bench_attention.md, engine.log; a summary table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode=${1:-tests}
OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT" /tmp/awqd
rm -f /tmp/awqd/BUILD  # a stamp an earlier bundle left on a warm machine
tar -C /tmp/awqd -xJf "${AWQD_BUNDLE:-.gpu/bundle.tar.xz}"
bin=/tmp/awqd/bin
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures
export AWQD_BINARY=$bin/awqd  # tests that run the executable (its build path does not exist here)
summary=()
status=0
deadline=${AWQD_DEADLINE_S:-100000}

step() {  # step NAME SECONDS LOG command...   (the limit shrinks to what is left before the deadline)
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((deadline - SECONDS - 10))
  ((left < limit)) && limit=$left
  if ((limit < 15)); then
    summary+=("$(printf '%-22s %-14s %4ds' "$name" "SKIPPED(time)" 0)")
    echo "== $name: skipped, no time left"
    return 0
  fi
  local start=$SECONDS
  local first
  first=1
  [[ -f $log ]] && first=$(($(wc -l <"$log") + 1))
  echo "######## $name: $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local verdict=PASS
  ((rc == 124 || rc == 137)) && verdict="TIMEOUT(${limit}s)"
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAIL(rc=$rc)"
  ((rc != 0)) && status=1
  local tests
  tests=$(tail -n +"$first" "$log" | grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' | tr -s ' ' | paste -sd' ')
  summary+=("$(printf '%-22s %-14s %4ds  %s' "$name" "$verdict" $((SECONDS - start)) "$tests")")
  echo "== $name: $verdict ($((SECONDS - start)) s)"
  return 0
}

# awqd opens libnccl.so.2 at run time (kernels/nccl.h): find this machine's, export it as
# AWQD_NCCL_LIBRARY (and keep NVLink multicast off, ever: awqd also defaults it to 0).
use_nccl() {
  export NCCL_NVLS_ENABLE=0
  nccl=""
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do
    [[ -e $d/libnccl.so.2 ]] && { nccl=$d/libnccl.so.2; break; }
  done
  if [[ -z $nccl ]]; then
    d=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null) &&
      [[ -e $d/lib/libnccl.so.2 ]] && nccl=$d/lib/libnccl.so.2
  fi
  [[ -z $nccl ]] && nccl=$(find /usr /opt -name 'libnccl.so.2*' 2>/dev/null | head -1)
  [[ -n $nccl ]] && export AWQD_NCCL_LIBRARY=$nccl
  return 0
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  echo "bundle: $(paste -sd' ' /tmp/awqd/BUILD 2>/dev/null || echo 'no BUILD stamp (an older bundle)')"
  git log -1 --format='working tree: commit %H %cd' 2>/dev/null
  date -u
} >>"$OUT/info.txt" 2>&1

case $mode in
  tests)
    log=$OUT/tests.log
    for t in test_device test_awq_repack test_ops test_attention test_sampling_gpu test_awq_gemm test_cuda_engine \
      test_engine_pipeline; do
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
    # AWQD_GEMM_ARGS: bench_awq_gemm arguments, e.g. the tensor-parallel-2 shards with the sweep
    # launched as the engine launches (PDL): "--m 1,8,64,128 --shapes qkv,4096x3072 --sweep-pdl".
    # shellcheck disable=SC2086
    step bench_gemm 420 "$OUT/bench_gemm.log" "$bin/bench_awq_gemm" ${AWQD_GEMM_ARGS:-}
    step bench_attention 300 "$OUT/bench_attention.log" "$bin/bench_attention" "$OUT/bench_attention.md"
    sed -n '/^## sweep.*: best/,/^$/p' "$OUT/bench_gemm.log"
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
  ab)
    deadline=${AWQD_DEADLINE_S:-560}
    old=${2:?usage: gpu_run.sh ab OLD_AWQD_BINARY}
    log=$OUT/ab.log
    use_nccl  # for tests and runs on several GPUs
    for t in ${AWQD_AB_TESTS:-test_ops test_attention test_cuda_engine test_engine_pipeline}; do
      [[ -x $bin/$t ]] && step "$t" 200 "$log" "$bin/$t" --gtest_brief=1
    done
    # The kernel benchmarks the bundle carries: the decode rows of each.
    [[ -x $bin/bench_attention ]] &&
      step bench_attention 200 "$OUT/bench_attention.log" "$bin/bench_attention" \
        "${AWQD_AB_ATTN_ARGS:---decode-only}" "$OUT/bench_attention.md"
    # bench_allreduce of both builds where the old binary's directory holds its own.
    if [[ -x $bin/bench_allreduce ]] && (($(nvidia-smi -L | wc -l) >= 2)); then
      step bench_allreduce 90 "$OUT/bench_allreduce.md" "$bin/bench_allreduce"
      [[ -x $(dirname "$old")/bench_allreduce ]] &&
        step bench_allreduce_old 90 "$OUT/bench_allreduce_old.md" "$(dirname "$old")/bench_allreduce"
    fi
    # AWQD_AB_GEMM_ARGS replaces the M list (e.g. "--m 1,8 --no-sweep" for a short call).
    gemm_args=${AWQD_AB_GEMM_ARGS:---m 1,2,4,8,16}
    old_gemm=$(dirname "$old")/bench_awq_gemm
    # shellcheck disable=SC2086
    [[ -x $bin/bench_awq_gemm ]] &&
      step bench_gemm 150 "$OUT/bench_gemm.log" "$bin/bench_awq_gemm" $gemm_args \
        --csv "$OUT/gemm.csv" --sweep-csv "$OUT/gemm_sweep.csv"
    # The old build's bench_awq_gemm, where the old binary's directory holds one: both benchmarks
    # twice, alternated (same arguments).
    if [[ -x $old_gemm ]]; then
      # shellcheck disable=SC2086
      step bench_gemm_old 150 "$OUT/bench_gemm_old.log" "$old_gemm" $gemm_args
      # shellcheck disable=SC2086
      step bench_gemm_2 150 "$OUT/bench_gemm_2.log" "$bin/bench_awq_gemm" $gemm_args
      # shellcheck disable=SC2086
      step bench_gemm_old_2 150 "$OUT/bench_gemm_old_2.log" "$old_gemm" $gemm_args
    fi
    step synth 150 "$log" "$bin/awqd" synth --like llama3-8b --out /tmp/model
    # AWQD_AB_BENCH_ARGS: extra awqd bench arguments (e.g. --tensor-parallel 2: NCCL is found as
    # in the tp mode); AWQD_AB_DECODE64=0 skips the 64-sequence runs, AWQD_AB_SEQS sets their
    # sequence count (default 64). AWQD_AB_NEW_ARGS: arguments for the new side only, to A/B a
    # flag with one binary (OLD = /tmp/awqd/bin/awqd, the bundle's own).
    for round in 1 2; do
      for which in old new; do
        b=$bin/awqd
        extra=${AWQD_AB_BENCH_ARGS:-}
        [[ $which == old ]] && b=$old
        [[ $which == new ]] && extra="$extra ${AWQD_AB_NEW_ARGS:-}"
        # shellcheck disable=SC2086
        step "decode-1 $which $round" 60 "$log" "$b" bench --model /tmp/model --quiet --workload decode-1 \
          $extra --out "$OUT/decode1-$which-$round.json"
        [[ ${AWQD_AB_DECODE64:-1} == 1 ]] || continue
        # shellcheck disable=SC2086
        step "decode-${AWQD_AB_SEQS:-64} $which $round" 90 "$log" "$b" bench --model /tmp/model --quiet --workload custom \
          --num-prompts "${AWQD_AB_SEQS:-64}" --input-len 512 --output-len 128 $extra --out "$OUT/decode64-$which-$round.json"
      done
    done
    # AWQD_AB_REFERENCE: awqd bench arguments of one more decode-1 run of the new binary, the
    # reference of a ratio (e.g. "--tensor-parallel 1" beside AWQD_AB_BENCH_ARGS="--tensor-parallel 2").
    if [[ -n ${AWQD_AB_REFERENCE:-} ]]; then
      # shellcheck disable=SC2086
      step "decode-1 reference" 60 "$log" "$bin/awqd" bench --model /tmp/model --quiet --workload decode-1 \
        $AWQD_AB_REFERENCE --out "$OUT/decode1-reference.json"
    fi
    grep -E "Failure|FAILED|rror" "$log" | head -20
    [[ -f $OUT/bench_allreduce_old.md ]] && { echo "bench_allreduce new:"; grep -E '^\|' "$OUT/bench_allreduce.md";
      echo "bench_allreduce old:"; grep -E '^\|' "$OUT/bench_allreduce_old.md"; }
    grep -E "^\| 1 \| |^\| (2|4|8|16|64) \| [0-9]+ \| (sm80\+|auto: [a-z.]+) \|" "$OUT/bench_attention.md" 2>/dev/null | head -60
    sed -n '/^## sweep.*: best/,$p' "$OUT/bench_gemm.log" 2>/dev/null | head -40
    # The M = 1 row of each shape (awq_us, pdl_us and pdl_l2hot: the L2-resident ceiling).
    grep -E "^## [a-z_]+:|^ +M |^ +1 " "$OUT/bench_gemm.log" 2>/dev/null | head -12
    # With the old build's benchmark: every row of both (M, plan, awq_us, cublas_us, pdl_us), in
    # the order they ran.
    if [[ -f $OUT/bench_gemm_old.log ]]; then
      for f in bench_gemm bench_gemm_old bench_gemm_2 bench_gemm_old_2; do
        [[ -f $OUT/$f.log ]] || continue
        echo "-- $f"
        grep -E "^ +[0-9]+ +[a-z-]+/" "$OUT/$f.log" | awk '{print $1, $2, $3, $7, $10}' | paste -sd' ' | fold -w 200
      done
    fi
    for f in "$OUT"/decode*.json; do
      python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[1].split("/")[-1], {k: j[k] for k in j if "itl" in k.lower() or "tokens_per_s" in k.lower()})' "$f" 2>/dev/null
    done
    ;;
  prof)
    deadline=${AWQD_DEADLINE_S:-560}
    use_nccl
    log=$OUT/prof.log
    step test_engine_pipeline 240 "$log" "$bin/test_engine_pipeline" --gtest_brief=1
    step test_cuda_engine 150 "$log" "$bin/test_cuda_engine" --gtest_brief=1
    ngpu=$(nvidia-smi -L | wc -l)
    ((ngpu >= 2)) && step test_tensor_parallel_gpu 120 "$log" "$bin/test_tensor_parallel_gpu" --gtest_brief=1
    step synth 150 "$log" "$bin/awqd" synth --like llama3-8b --out /tmp/model
    for async in "" --no-async-output; do
      step "decode-1 $async" 90 "$log" "$bin/awqd" bench --model /tmp/model --quiet --workload decode-1 --profile $async
      step "decode-64 $async" 120 "$log" "$bin/awqd" bench --model /tmp/model --quiet --workload custom \
        --num-prompts 64 --input-len 512 --output-len 128 --profile $async
    done
    step "prefill" 90 "$log" "$bin/awqd" bench --model /tmp/model --quiet --workload custom \
      --num-prompts 256 --input-len 512 --output-len 1 --profile
    ((ngpu >= 2)) && step "decode-1 tp2" 90 "$log" "$bin/awqd" bench --model /tmp/model --quiet --workload decode-1 \
      --tensor-parallel 2 --profile
    grep -E "Failure|FAILED|rror|^(workload|requests|decode|TTFT|profile)|^  " "$log" | head -120
    ;;
  tp)
    # Tensor parallelism and replicas. On any machine: the CPU sharding tests, the multi-GPU
    # tests (all-reduce paths, TP = 2..min(4, GPUs) against one GPU, CUDA replicas), the
    # all-reduce benchmark, decode-1 on `awqd synth --like llama3-8b` at TP = 1, 2 (4).
    # 2 GPUs: the one-GPU engine tests; bulk-512-256 (2000 prompts) on 1 GPU and on 2 replicas.
    # 3+ GPUs: TP = 3 on llama3-8b (logits and greedy against TP = 1) and qwen2.5-14b (generate,
    # TP = 3 and 1).
    deadline=${AWQD_DEADLINE_S:-560}
    use_nccl
    ngpu=$(nvidia-smi -L | wc -l)
    { echo "GPUs: $ngpu; libnccl: ${nccl:-NOT FOUND}; NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"; nvidia-smi topo -m; } \
      >>"$OUT/info.txt" 2>&1
    log=$OUT/tp_tests.log
    elog=$OUT/tp_engine.log
    models=/tmp/awqd/models
    mkdir -p $models
    bench() {  # bench NAME LIMIT awqd-bench-args...: one JSON line per run into bench.jsonl
      local name=$1 limit=$2
      shift 2
      rm -f /tmp/awqd/bench.json
      step "$name" "$limit" "$elog" "$bin/awqd" bench --quiet --out /tmp/awqd/bench.json "$@"
      [[ -s /tmp/awqd/bench.json ]] &&
        python3 -c 'import json,sys; j=json.load(open("/tmp/awqd/bench.json")); j["name"]=sys.argv[1]; print(json.dumps(j))' \
          "$name" >>"$OUT/bench.jsonl"
    }
    step test_tensor_parallel 60 "$log" "$bin/test_tensor_parallel" --gtest_brief=1
    step test_allreduce 150 "$log" "$bin/test_allreduce" --gtest_brief=1
    # TP = 2 is the 2-GPU machine's; with more GPUs test 3 and 4 (time).
    ((ngpu >= 4)) && export AWQD_TP_TEST_DEGREES="3 4"
    step test_tensor_parallel_gpu 240 "$log" "$bin/test_tensor_parallel_gpu" --gtest_brief=1
    step test_engine_group 90 "$log" "$bin/test_engine_group" --gtest_brief=1
    step test_engine_pipeline 240 "$log" "$bin/test_engine_pipeline" --gtest_brief=1 --gtest_filter='*TensorParallel*'
    # One GPU through the reworked executor (the fused norm sequence, rank-0 sampling).
    ((ngpu == 2)) && step test_cuda_engine 150 "$log" "$bin/test_cuda_engine" --gtest_brief=1
    step bench_allreduce 90 "$OUT/bench_allreduce.md" "$bin/bench_allreduce"
    ((ngpu >= 4)) && step bench_allreduce_x2 60 "$OUT/bench_allreduce.md" "$bin/bench_allreduce" 2
    step synth_llama3_8b 150 "$elog" "$bin/awqd" synth --like llama3-8b --out $models/llama3-8b
    for tp in 1 2 4; do
      ((tp <= ngpu)) && bench "decode-1 tp$tp" 90 --model $models/llama3-8b --workload decode-1 --tensor-parallel $tp
    done
    if ((ngpu == 2)) && [[ ${AWQD_TP_BULK:-1} == 1 ]]; then  # AWQD_TP_BULK=0: decode only
      bench "bulk-512-256 1gpu" 200 --model $models/llama3-8b --workload bulk-512-256
      bench "bulk-512-256 2replicas" 150 --model $models/llama3-8b --workload bulk-512-256 --replicas 2
    fi
    if ((ngpu >= 3)); then
      tlog=$OUT/tp3_models.log
      step tp3_llama3_8b 200 "$tlog" env AWQD_TP_MODEL=$models/llama3-8b AWQD_TP_DEGREES=3 \
        "$bin/test_tensor_parallel_gpu" --gtest_filter='*ModelFromEnvironment*'
      rm -rf $models/llama3-8b
      step synth_qwen25_14b 200 "$elog" "$bin/awqd" synth --like qwen2.5-14b --out $models/qwen2.5-14b
      for tp in 3 1; do
        step "qwen2.5-14b generate tp$tp" 100 "$tlog" "$bin/awqd" generate --device cuda --model $models/qwen2.5-14b \
          --tensor-parallel $tp --prompt "The structure of the protein was determined by" --temperature 0 \
          --max-tokens 32 --ignore-eos --json
      done
    fi
    grep -E "Failure|FAILED|rror" "$log" "$elog" "${tlog:-/dev/null}" | head -40
    echo
    [[ -f $OUT/bench_allreduce.md ]] && grep -E '^\||^##|^eager' "$OUT/bench_allreduce.md"
    grep -hE '^[^ ]+ tp [0-9]( \(NCCL only\))?:|diverges|^GPU [0-9]' "$log" "${tlog:-/dev/null}" | head -40
    if [[ -n ${tlog:-} && -f $tlog ]]; then
      python3 - "$tlog" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"')]
if len(runs) == 2:
    a, b = runs[0]["token_ids"], runs[1]["token_ids"]
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"qwen2.5-14b greedy: tp 3 and tp 1 agree on the first {same} of {len(a)} tokens; "
          f"tp 3 {runs[0]['timings']['tokens_per_s']:.1f} tok/s, tp 1 {runs[1]['timings']['tokens_per_s']:.1f} tok/s")
PY
    fi
    if [[ -f $OUT/bench.jsonl ]]; then
      python3 - "$OUT/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {r["name"]: r for r in rows}
print("| run | decode tok/s | requests/s | output tok/s | vs baseline |")
print("|---|---:|---:|---:|---:|")
for r in rows:
    base = by.get("decode-1 tp1") if r["name"].startswith("decode-1") else by.get("bulk-512-256 1gpu")
    if r["name"].startswith("decode-1"):
        ratio = r.get("decode_tokens_per_s", 0) / base["decode_tokens_per_s"] if base else 0
    else:
        ratio = r["output_tokens_per_s"] / base["output_tokens_per_s"] if base else 0
    print(f"| {r['name']} | {r.get('decode_tokens_per_s', 0):.1f} | {r['requests_per_s']:.2f} | "
          f"{r['output_tokens_per_s']:.0f} | {ratio:.2f}x |")
PY
    fi
    ;;
  *)
    echo "usage: $0 tests|bench|engine|prof|tp|ab OLD_AWQD" >&2
    exit 2
    ;;
esac

# The device tool brings back at most 8 files of $OUT (in name order): past 7, all of them also go
# into one tarball whose name sorts first, so no log or JSON is lost.
if (($(find "$OUT" -maxdepth 1 -type f | wc -l) > 7)); then
  tar -C "$OUT" -cJf /tmp/awqd-out.tar.xz --exclude=./0-all.tar.xz . && mv /tmp/awqd-out.tar.xz "$OUT/0-all.tar.xz"
fi

echo
echo "==================== summary ($mode) ===================="
head -2 "$OUT/info.txt" | tail -1
printf '%s\n' "${summary[@]}"
exit $status
