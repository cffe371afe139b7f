#!/usr/bin/env bash
# run 109: the copy warp's copy modes (experiment build: AWQD_TMA_MODE 1 = bulk W + bulk S + TMA x,
# 2 = bulk W + cp.async S, 3 = cp.async W and S; x by TMA in all), against w64 without the copy warp.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
for mode in 2 3; do
  AWQD_TMA_MODE=$mode timeout 200 $B/test_awq_gemm --gtest_brief=1 --gtest_filter='*EveryTile*:*Chained*:*EveryMFrom1*' > $OUT/test_mode$mode.log 2>&1; echo "test mode $mode rc=$?"
  grep -E "Failure|FAILED|PASSED" $OUT/test_mode$mode.log | head -5
done
for round in 1 2; do for mode in 1 2 3; do
  AWQD_TMA_MODE=$mode timeout 100 $B/bench_awq_gemm --m 17,64,128 --no-sweep \
    --shapes qkv,gate_up,down,4096x14336,7168x4096 > $OUT/bench_m${mode}_r$round.log 2>&1
  echo "== mode $mode round $round rc=$?"
  awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s%s:%s/%s ", s, $1, $10, $16} END{print ""}' $OUT/bench_m${mode}_r$round.log
done; done
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
