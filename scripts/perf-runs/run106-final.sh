#!/usr/bin/env bash
# docs/PERF.md run 106. The session's end state on one GPU: scripts/gpu_run.sh tests (under a
# deadline), the issue-5 table of bench_awq_gemm, scripts/gpu_run.sh engine with 7 workloads.
# carry: .gpu/slim.tar.xz (every GPU test binary, awqd, bench_awq_gemm) .gpu/fixtures
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export AWQD_BUNDLE=.gpu/slim.tar.xz
AWQD_DEADLINE_S=170 scripts/gpu_run.sh tests 2>&1 | tail -30
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
timeout 90 $B/bench_awq_gemm --m 1,2,4,8,16,32,64,128,256,1024 --no-sweep > $OUT/bench_gemm.log 2>&1; echo "bench rc=$?"
sed -n '/^## summary/,$p' $OUT/bench_gemm.log
AWQD_WORKLOADS="decode-1 --workload decode-1
decode-8 --workload custom --num-prompts 8 --input-len 512 --output-len 128
decode-16 --workload custom --num-prompts 16 --input-len 512 --output-len 128
decode-64 --workload custom --num-prompts 64 --input-len 512 --output-len 128
prefill --workload custom --num-prompts 256 --input-len 512 --output-len 1
bulk-512-256 --workload bulk-512-256
shared-prefix --workload shared-prefix" AWQD_DEADLINE_S=$((365 - SECONDS)) scripts/gpu_run.sh engine 2>&1 | grep -E "^(workload|requests|decode|TTFT|prefix|preempt)|error|FAIL|rc=" | head -40
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
