#!/usr/bin/env bash
# run 107, second call: only the ncu part (the first call's filter named the demangled base name)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
for m in 64 128; do
  timeout 200 ncu --set full --import-source no --kernel-name-base mangled -k regex:WgmmaConfig --launch-skip 10 --launch-count 1 \
    -f -o "$OUT/gu$m" $B/bench_awq_gemm --shapes gate_up --m $m --no-sweep > "$OUT/ncu_run$m.log" 2>&1
  echo "ncu M=$m rc=$?"
  ncu -i "$OUT/gu$m.ncu-rep" --page details > "$OUT/gu$m.txt" 2>&1
  ncu -i "$OUT/gu$m.ncu-rep" --page source --print-source sass --csv > "$OUT/gu${m}_src.csv" 2>&1
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|Registers|Warp Cycles Per Issued|Issued Ipc" "$OUT/gu$m.txt" | head -12
done
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
