#!/usr/bin/env bash
# docs/PERF.md run 100. A/B of the st8/st8w per-lane activation variants (bundle of 1b11fa6 in
# .gpu/slim.tar.xz) against ea51e95 (.gpu/old5: awqd.xz, bench_awq_gemm.xz); AB_M picks the rows.
# carry: .gpu/slim.tar.xz .gpu/fixtures .gpu/old5
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/old /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
for b in awqd bench_awq_gemm; do xz -dc .gpu/old5/$b.xz > /tmp/old/$b; chmod +x /tmp/old/$b; done
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures AWQD_BINARY=/tmp/awqd/bin/awqd
cat /tmp/awqd/BUILD; nvidia-smi -L | head -1
B=/tmp/awqd/bin
for t in ${AB_TESTS:-test_awq_gemm test_cuda_engine test_engine_pipeline}; do
  timeout 200 $B/$t --gtest_brief=1 > /tmp/exp/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' /tmp/exp/$t.log | paste -sd' ')"
  grep -E "Failure|Expected|Which is|M=|agreement" /tmp/exp/$t.log | head -12
done
GA="--m ${AB_M:-1,2,4,6,8} --shapes qkv,o,gate_up,down,4096x3072,2048x4096,4096x14336,7168x4096 --no-sweep"
for r in 1; do
  timeout 100 /tmp/old/bench_awq_gemm $GA > /tmp/exp/gemm_old_$r.log 2>&1
  timeout 100 $B/bench_awq_gemm $GA > /tmp/exp/gemm_new_$r.log 2>&1
done
for f in gemm_old_1 gemm_new_1; do echo "-- $f (shape:M:plan:pdl_us)"; awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s%s:%s:%s ", s, $1, $2, $10} END{print ""}' /tmp/exp/$f.log | sed 's/tensor-core\///g' | fold -w 230; done
[[ -d /tmp/model ]] || timeout 150 $B/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
run() { local name=$1 bin=$2; shift 2
  timeout 120 $bin bench --model /tmp/model --quiet "$@" > /tmp/exp/run-$name.log 2>&1
  printf '%-14s %s | %s | %s\n' "$name" "$(grep -oE 'ITL p50 [0-9.]+ ms' /tmp/exp/run-$name.log)" "$(grep -E '^requests' /tmp/exp/run-$name.log)" "$(grep -E 'tokens/s' /tmp/exp/run-$name.log | head -1)"; }
for r in 1 2; do
  run "old-d1-r$r" /tmp/old/awqd --workload decode-1
  run "new-d1-r$r" $B/awqd --workload decode-1
done
for r in 1; do
  for n in 4 6 8; do
    run "old-d$n-r$r" /tmp/old/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128
    run "new-d$n-r$r" $B/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128
  done
done
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
