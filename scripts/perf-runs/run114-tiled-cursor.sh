#!/usr/bin/env bash
# docs/PERF.md run 114. The tiled kernels (sm_80 and Turing paths) with ChunkCursor (branch
# wip/tiled-cursor) against the build of 465a690 (.gpu/old8): test_awq_gemm, then the
# benchmark's tiled_us and turing_us columns (the tiled kernel alone, the forced Turing path),
# alternated.
# carry: .gpu/slim.tar.xz (bench_awq_gemm test_awq_gemm) .gpu/old8
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
B=/tmp/awqd/bin; export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
timeout 200 $B/test_awq_gemm --gtest_brief=1 > $OUT/test_awq_gemm.log 2>&1; echo "test_awq_gemm rc=$?"
grep -E "Failure|FAILED|PASSED" $OUT/test_awq_gemm.log | head -8
for round in 1 2; do for b in new:$B/bench_awq_gemm old:.gpu/old8/bench_awq_gemm; do
  timeout 100 ${b#*:} --m 1,8,17,64,128,256 --no-sweep --shapes qkv,o,gate_up,down > $OUT/bench_${b%%:*}_r$round.log 2>&1
  echo "== ${b%%:*} round $round rc=$?"
  awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{p=$2; sub(/tensor-core\//,"",p); printf "%s%s:%s/%s ", s, $1, $13, $14} END{print ""}' $OUT/bench_${b%%:*}_r$round.log
done; done
cd "$OUT" && tar -cJf /tmp/all.tar.xz . && rm -rf "$OUT"/* && mv /tmp/all.tar.xz "$OUT"/
