#!/usr/bin/env bash
# docs/PERF.md run 116. ncu of the Hopper kernel after run 113 (copy addresses carried across
# k-tiles): instructions per warp and k-tile, gate_up at M = 64 (w64) and M = 128 (w128), as in
# run 107. carry: .gpu/slim.tar.xz (bench_awq_gemm)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
for m in 64 128; do
  timeout 150 ncu --set full --import-source no --kernel-name-base mangled -k regex:WgmmaConfig --launch-skip 10 \
    --launch-count 1 -f -o "$OUT/gu$m" $B/bench_awq_gemm --shapes gate_up --m $m --no-sweep > "$OUT/ncu_run$m.log" 2>&1
  echo "ncu M=$m rc=$?"
  ncu -i "$OUT/gu$m.ncu-rep" --page source --print-source sass --csv > "$OUT/gu${m}_src.csv" 2>&1
  ncu -i "$OUT/gu$m.ncu-rep" --page details > "$OUT/gu$m.txt" 2>&1
  grep -E "Duration|SM Frequency|Issued Ipc Active|Registers Per|Executed Instructions  " "$OUT/gu$m.txt" | head -6
  rm -f "$OUT/gu$m.ncu-rep"
done
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
