#!/usr/bin/env bash
# docs/PERF.md run 108. w64 with a copy warp (WgmmaConfig::kTma): GPU tests, then bench_awq_gemm at
# M = 17-128 (pdl_us: the copy-warp kernel where the plan says /tma; pdl_alt: the same launches
# without it), then ncu of the new kernel on gate_up at M = 64 (per-instruction stall samples).
# carry: .gpu/slim.tar.xz (bench_awq_gemm test_awq_gemm test_cuda_engine awqd) .gpu/fixtures
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures PATH=/usr/local/cuda/bin:$PATH
timeout 240 $B/test_awq_gemm --gtest_brief=1 > $OUT/test_awq_gemm.log 2>&1; echo "test_awq_gemm rc=$?"
grep -E "Failure|FAILED|PASSED|INFO" $OUT/test_awq_gemm.log | head -20
timeout 120 $B/bench_awq_gemm --m 17,32,48,64,96,128 --no-sweep \
  --shapes qkv,o,gate_up,down,4096x3072,2048x4096,4096x14336,7168x4096 > $OUT/bench.log 2>&1; echo "bench rc=$?"
echo "-- shape M plan pdl_us pdl_alt(no tma)"
awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{print s, $1, $2, $10, $16}' $OUT/bench.log | column -t
timeout 150 $B/test_cuda_engine --gtest_brief=1 > $OUT/test_cuda_engine.log 2>&1; echo "test_cuda_engine rc=$?"
grep -E "Failure|FAILED|PASSED|agreement" $OUT/test_cuda_engine.log | head -10
timeout 90 ncu --set full --import-source no --kernel-name-base mangled -k regex:awq_gemm_tma_kernel --launch-skip 10 \
  --launch-count 1 -f -o "$OUT/tma64" $B/bench_awq_gemm --shapes gate_up --m 64 --no-sweep > "$OUT/ncu_run.log" 2>&1
echo "ncu rc=$?"
ncu -i "$OUT/tma64.ncu-rep" --page source --print-source sass --csv > "$OUT/tma64_src.csv" 2>&1
ncu -i "$OUT/tma64.ncu-rep" --page details > "$OUT/tma64.txt" 2>&1
grep -E "Duration|SM Frequency|Issued Ipc Active|Registers Per" "$OUT/tma64.txt" | head -6
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
