#!/usr/bin/env bash
# docs/PERF.md run 115. The session's end state on one GPU (bundle of 06d596d): the GPU tests of the
# kernels and engine (test_attention left out: its code is unchanged since run 106, and it takes
# two minutes), greedy ids against HF transformers, the issue-5 table of bench_awq_gemm, and
# scripts/gpu_run.sh engine with 7 workloads.
# carry: .gpu/slim.tar.xz (GPU tests, awqd, bench_awq_gemm) .gpu/fixtures
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures AWQD_BINARY=$B/awqd
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in test_device test_awq_repack test_ops test_sampling_gpu test_awq_gemm test_cuda_engine test_engine_pipeline; do
  timeout 150 $B/$t --gtest_brief=1 > $OUT/$t.log 2>&1
  echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' $OUT/$t.log | paste -sd' ')"
  grep -E "Failure|agreement" $OUT/$t.log | head -4
done
timeout 100 python3 scripts/hf_greedy.py --model .gpu/fixtures/llama-13m --awqd $B/awqd \
  --reference .gpu/fixtures/llama-13m/reference-outputs.json > $OUT/hf.log 2>&1; echo "hf_greedy rc=$?"
grep '^{' $OUT/hf.log | cut -c1-200
timeout 90 $B/bench_awq_gemm --m 1,2,4,8,16,32,64,128,256,1024 --no-sweep > $OUT/bench_gemm.log 2>&1; echo "bench rc=$?"
sed -n '/^## summary/,$p' $OUT/bench_gemm.log
AWQD_WORKLOADS="decode-1 --workload decode-1
decode-8 --workload custom --num-prompts 8 --input-len 512 --output-len 128
decode-16 --workload custom --num-prompts 16 --input-len 512 --output-len 128
decode-64 --workload custom --num-prompts 64 --input-len 512 --output-len 128
prefill --workload custom --num-prompts 256 --input-len 512 --output-len 1
bulk-512-256 --workload bulk-512-256
shared-prefix --workload shared-prefix" AWQD_DEADLINE_S=$((560 - SECONDS)) scripts/gpu_run.sh engine 2>&1 | grep -E "^(workload|requests|decode|TTFT|prefix|preempt)|error|FAIL|rc=" | head -40
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
