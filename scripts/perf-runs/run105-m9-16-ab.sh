#!/usr/bin/env bash
# docs/PERF.md run 105. The M = 9-16 planner (bundle of 10b2703) against b9040a5
# (.gpu/old7/awqd.xz): tests, bench_awq_gemm at M = 9/12/16, the engine at 8/12/16 sequences.
# carry: .gpu/slim.tar.xz .gpu/fixtures .gpu/old7
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/old /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
xz -dc .gpu/old7/awqd.xz > /tmp/old/awqd; chmod +x /tmp/old/awqd
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures AWQD_BINARY=/tmp/awqd/bin/awqd
cat /tmp/awqd/BUILD; nvidia-smi -L | head -1
B=/tmp/awqd/bin
for t in test_awq_gemm test_cuda_engine test_engine_pipeline; do
  timeout 200 $B/$t --gtest_brief=1 > /tmp/exp/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' /tmp/exp/$t.log | paste -sd' ')"
  grep -E "Failure|Expected|Which is|agreement" /tmp/exp/$t.log | head -8
done
timeout 120 $B/bench_awq_gemm --m 9,12,16 --shapes qkv,o,gate_up,down,4096x3072,2048x4096,4096x14336,7168x4096 --no-sweep > /tmp/exp/gemm_new.log 2>&1
echo "-- gemm (shape:M:plan:pdl_us)"; awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s%s:%s:%s ", s, $1, $2, $10} END{print ""}' /tmp/exp/gemm_new.log | sed 's/tensor-core\///g' | fold -w 230
timeout 150 $B/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
run() { local name=$1 bin=$2; shift 2
  timeout 100 $bin bench --model /tmp/model --quiet "$@" > /tmp/exp/run-$name.log 2>&1
  printf '%-12s %s | %s\n' "$name" "$(grep -oE 'ITL p50 [0-9.]+ ms' /tmp/exp/run-$name.log)" "$(grep -E '^requests' /tmp/exp/run-$name.log)"; }
for r in 1 2; do
  for n in 12 16; do
    run "old-d$n-r$r" /tmp/old/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128
    run "new-d$n-r$r" $B/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128
  done
done
run "old-d8" /tmp/old/awqd --workload custom --num-prompts 8 --input-len 512 --output-len 128
run "new-d8" $B/awqd --workload custom --num-prompts 8 --input-len 512 --output-len 128
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
