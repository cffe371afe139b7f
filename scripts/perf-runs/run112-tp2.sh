#!/usr/bin/env bash
# docs/PERF.md run 112 (nvidia-h200-x2). Tensor parallelism after the M = 9-16 and SiLU changes of
# runs 100-105: tests, then decode at 1, 8, 16 and 64 sequences at tp 1 and 2, alternated
# (bundle of 465a690).
# carry: .gpu/slim.tar.xz .gpu/fixtures
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
export NCCL_NVLS_ENABLE=0
nccl=""; for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do [[ -e $d/libnccl.so.2 ]] && { nccl=$d/libnccl.so.2; break; }; done
if [[ -z $nccl ]]; then d=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null) && [[ -e $d/lib/libnccl.so.2 ]] && nccl=$d/lib/libnccl.so.2; fi
[[ -z $nccl ]] && nccl=$(find /usr /opt -name 'libnccl.so.2*' 2>/dev/null | head -1)
export AWQD_NCCL_LIBRARY=$nccl
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures AWQD_BINARY=/tmp/awqd/bin/awqd
cat /tmp/awqd/BUILD; nvidia-smi -L; echo "nccl=$nccl NVLS=${NCCL_NVLS_ENABLE:-unset}"
B=/tmp/awqd/bin
for t in test_allreduce test_tensor_parallel_gpu; do
  timeout 200 $B/$t --gtest_brief=1 > /tmp/exp/$t.log 2>&1; echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' /tmp/exp/$t.log | paste -sd' ')"
  grep -E "Failure|Expected|Which is|agreement| tp [0-9]" /tmp/exp/$t.log | head -8
done
timeout 150 $B/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
run() { local name=$1; shift
  timeout 120 $B/awqd bench --model /tmp/model --quiet "$@" > /tmp/exp/run-$name.log 2>&1
  printf '%-12s %s | %s | %s\n' "$name" "$(grep -oE 'ITL p50 [0-9.]+ ms' /tmp/exp/run-$name.log)" "$(grep -E '^requests' /tmp/exp/run-$name.log)" "$(grep -E 'decode.*tokens/s' /tmp/exp/run-$name.log | head -1)"; }
for r in 1 2; do
  run "tp1-r$r" --workload decode-1
  run "tp2-r$r" --workload decode-1 --tensor-parallel 2
done
for n in 8 16 64; do for r in 1 2; do
  run "tp1-d$n-r$r" --workload custom --num-prompts $n --input-len 512 --output-len 128
  run "tp2-d$n-r$r" --workload custom --num-prompts $n --input-len 512 --output-len 128 --tensor-parallel 2
done; done
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
