#!/usr/bin/env bash
# docs/PERF.md run 107. (1) Greedy ids of the CUDA engine against HF transformers on llama-13m,
# fp16 and its `awqd quantize` output (.gpu/quant/llama-13m-awq), on the current kernels; (2) the
# Hopper wgmma kernel taken apart: its SASS and an ncu profile (full set, per-instruction stall
# samples) of gate_up at M = 64 (w64) and M = 128 (w128).
# carry: .gpu/slim.tar.xz (awqd, bench_awq_gemm, GPU tests) .gpu/fixtures .gpu/quant
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export AWQD_FIXTURES=$PWD/.gpu/fixtures PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
for m in .gpu/fixtures/llama-13m .gpu/quant/llama-13m-awq; do
  echo "== hf_greedy $m"
  timeout 150 python3 scripts/hf_greedy.py --model "$m" --awqd $B/awqd \
    --reference .gpu/fixtures/llama-13m/reference-outputs.json > "$OUT/hf_$(basename $m).log" 2>&1
  echo "rc=$?"; grep -v "^\s*$" "$OUT/hf_$(basename $m).log" | grep -vi warn | tail -4 | cut -c1-400
done
cuobjdump -sass $B/bench_awq_gemm > /tmp/all.sass 2>&1
awk '/Function :/ {p = ($3 ~ /WgmmaConfig/)} p' /tmp/all.sass > "$OUT/sass_wgmma.txt"
wc -l "$OUT/sass_wgmma.txt"; grep -c HGMMA "$OUT/sass_wgmma.txt"
for m in 64 128; do
  timeout 150 ncu --set full --import-source no --kernel-name-base mangled -k regex:WgmmaConfig --launch-skip 10 --launch-count 1 \
    -f -o "$OUT/gu$m" $B/bench_awq_gemm --shapes gate_up --m $m --no-sweep > "$OUT/ncu_run$m.log" 2>&1
  echo "ncu M=$m rc=$?"
  ncu -i "$OUT/gu$m.ncu-rep" --page details > "$OUT/gu$m.txt" 2>&1
  ncu -i "$OUT/gu$m.ncu-rep" --page source --print-source sass --csv > "$OUT/gu${m}_src.csv" 2>&1
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|Registers|Warp Cycles Per Issued|Issued Ipc" "$OUT/gu$m.txt" | head -12
done
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
