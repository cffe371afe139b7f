#!/usr/bin/env bash
# docs/PERF.md run 118. What the two add_rmsnorm launches per layer (and qkv_rope_cache) cost in a
# decode step on one GPU: an experiment build of awqd (AWQD_EXP_SKIP leaves them out of decode
# steps; outputs garbage, timing only), decode-1 and 8 sequences, alternated twice.
# carry: .gpu/slim.tar.xz
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
cat /tmp/awqd/BUILD; nvidia-smi -L | head -1
B=/tmp/awqd/bin
timeout 150 $B/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
run() { local name=$1 skip=$2; shift 2
  AWQD_EXP_SKIP=$skip timeout 100 $B/awqd bench --model /tmp/model --quiet "$@" > /tmp/exp/run-$name.log 2>&1
  printf '%-22s %s\n' "$name" "$(grep -oE 'ITL p50 [0-9.]+ ms' /tmp/exp/run-$name.log)"; }
for r in 1 2; do
  for s in none norm_o norm_d norm_o,norm_d rope; do
    run "d1-$s-r$r" $s --workload decode-1
  done
  for s in none norm_o,norm_d; do
    run "d8-$s-r$r" $s --workload custom --num-prompts 8 --input-len 512 --output-len 128
  done
done
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
