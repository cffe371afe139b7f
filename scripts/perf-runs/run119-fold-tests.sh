#!/usr/bin/env bash
# docs/PERF.md run 119. The folded norms (norm-fold branch) on one GPU: the GPU tests of the AWQ
# GEMM (the fold against add_rmsnorm between the GEMMs) and of the engine (tokens folded vs norm
# kernels; llama-13m against HF's reference), and greedy ids against HF transformers on
# llama-13m fp16 and on its `awqd quantize` output (the AWQ model, whose decode steps fold).
# carry: .gpu/slim.tar.xz (awqd, test_awq_gemm, test_cuda_engine) .gpu/fixtures .gpu/quant
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures AWQD_BINARY=$B/awqd
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in test_awq_gemm test_cuda_engine; do
  timeout 200 $B/$t --gtest_brief=1 > $OUT/$t.log 2>&1
  echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' $OUT/$t.log | paste -sd' ')"
  grep -E "Failure|agreement|folded norms|Which is|Expected" $OUT/$t.log | head -12
done
for m in .gpu/fixtures/llama-13m .gpu/quant/llama-13m-awq; do
  timeout 150 python3 scripts/hf_greedy.py --model $m --awqd $B/awqd \
    --reference .gpu/fixtures/llama-13m/reference-outputs.json > $OUT/hf-$(basename $m).log 2>&1
  echo "hf_greedy $m rc=$?"; grep '^{' $OUT/hf-$(basename $m).log | cut -c1-220
done
$B/awqd generate --device cuda --model .gpu/quant/llama-13m-awq --prompt "hello" --max-tokens 4 --temperature 0 --json 2>&1 | grep -oE '"model":"[^"]*"' | head -1
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
