#!/usr/bin/env bash
# run 111: the copy-warp kernel (mode 2 copies) taken apart (experiment build): 7 = copies alone, 8 = no wgmma,
# 9 = no dequantization; 2 = all of it; pdl_alt = w64 without the copy warp.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
for round in 1 2; do for mode in 2 7 8 9; do
  AWQD_TMA_MODE=$mode timeout 100 $B/bench_awq_gemm --m 64,128 --no-sweep \
    --shapes qkv,gate_up,down,4096x14336 > $OUT/bench_m${mode}_r$round.log 2>&1
  echo "== mode $mode round $round rc=$?"
  awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s%s:%s/%s ", s, $1, $10, $16} END{print ""}' $OUT/bench_m${mode}_r$round.log
done; done
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
