#!/usr/bin/env bash
# docs/PERF.md run 103. An experiment build of 9d941b1 (not committed) whose CudaExecutor::forward
# fused the SiLU into down only for steps of at most $AWQD_EXP_FUSED_SILU rows (the condition
# `T <= std::min(stream_max_m, fused_silu_max)`, fused_silu_max read once from the environment,
# default 16); main now has the constant kFusedSiluMaxRows = 2 instead. carry: .gpu/slim.tar.xz
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
cat /tmp/awqd/BUILD; nvidia-smi -L | head -1
B=/tmp/awqd/bin
timeout 150 $B/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
run() { local name=$1; shift
  timeout 100 $B/awqd bench --model /tmp/model --quiet "$@" > /tmp/exp/run-$name.log 2>&1
  printf '%-14s %s | %s\n' "$name" "$(grep -oE 'ITL p50 [0-9.]+ ms' /tmp/exp/run-$name.log)" "$(grep -E '^requests' /tmp/exp/run-$name.log)"; }
for n in 2 4 8 16; do
  for f in 16 4 1; do
    AWQD_EXP_FUSED_SILU=$f run "d$n-fuse$f" --workload custom --num-prompts $n --input-len 512 --output-len 128
  done
done
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
