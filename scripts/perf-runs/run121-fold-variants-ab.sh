#!/usr/bin/env bash
# docs/PERF.md runs 121 and 122 (run 122: the same script after its launch failure was mended). The folded norms as their own kernel instantiations (StreamConfig::Folded): awqd of the norm-fold branch (new, and the
# same binary with --no-fold-norms) against main's of 267cc31 (.gpu/old9), `awqd bench` on
# `awqd synth --like llama3-8b`, alternated twice; bench_awq_gemm at M = 1-16 against
# .gpu/old8 (465a690: the stream kernel as main has it) for the stream kernel's new epilogue;
# the GPU tests of the GEMM and the engine.
# carry: .gpu/slim.tar.xz (awqd, bench_awq_gemm, test_awq_gemm, test_cuda_engine) .gpu/fixtures .gpu/old8 .gpu/old9
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/old /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
xz -dc .gpu/old9/awqd.xz > /tmp/old/awqd; chmod +x /tmp/old/awqd
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures AWQD_BINARY=$B/awqd
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in test_awq_gemm test_cuda_engine; do
  timeout 200 $B/$t --gtest_brief=1 > /tmp/exp/$t.log 2>&1
  echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' /tmp/exp/$t.log | paste -sd' ')"
  grep -E "Failure|agreement|folded norms|Which is|Expected" /tmp/exp/$t.log | head -10
done
for r in old new; do
  bin=$B/bench_awq_gemm; [[ $r == old ]] && bin=.gpu/old8/bench_awq_gemm
  timeout 120 $bin --m 1,2,4,5,8,12,16 --shapes qkv,o,gate_up,down,down_silu --no-sweep > /tmp/exp/gemm-$r.log 2>&1
  printf 'gemm-%s: ' $r; awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s:%s:%s ", s, $1, $10} END{print ""}' /tmp/exp/gemm-$r.log
done
timeout 150 $B/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
run() { local name=$1 bin=$2; shift 2
  timeout 100 $bin bench --model /tmp/model --quiet "$@" > /tmp/exp/run-$name.log 2>&1
  printf '%-18s %s | %s\n' "$name" "$(grep -oE 'ITL p50 [0-9.]+ ms' /tmp/exp/run-$name.log)" "$(grep -E '^decode' /tmp/exp/run-$name.log)"; }
for r in 1 2; do
  run "old-d1-r$r" /tmp/old/awqd --workload decode-1
  run "new-d1-r$r" $B/awqd --workload decode-1
  run "nofold-d1-r$r" $B/awqd --workload decode-1 --no-fold-norms
  for n in 8 16; do
    run "old-d$n-r$r" /tmp/old/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128
    run "new-d$n-r$r" $B/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128
    run "nofold-d$n-r$r" $B/awqd --workload custom --num-prompts $n --input-len 512 --output-len 128 --no-fold-norms
  done
done
run "old-d64" /tmp/old/awqd --workload custom --num-prompts 64 --input-len 512 --output-len 128
run "new-d64" $B/awqd --workload custom --num-prompts 64 --input-len 512 --output-len 128
run "new-d1-profile" $B/awqd --workload decode-1 --profile
grep -A30 -i "profile" /tmp/exp/run-new-d1-profile.log | head -30
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
