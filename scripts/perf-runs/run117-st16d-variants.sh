#!/usr/bin/env bash
# docs/PERF.md run 117. st16 with the lanes' own activation loads (st16d): four register
# variants of an experiment build (AWQD_EXP_ST16D=1..4; 0 = st16 staged, as main before), swept
# at M = 9/12/16 with PDL; and the rotating buffer of st8d against .gpu/old8 (465a690, whose stream
# kernel is main's before this change) at M = 1-8.
# carry: .gpu/slim.tar.xz .gpu/old8
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/awqd /tmp/exp
rm -rf /tmp/awqd/* /tmp/exp/*; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
cat /tmp/awqd/BUILD; nvidia-smi -L | head -1
B=/tmp/awqd/bin
shapes=qkv,gate_up,4096x14336,o,down,4096x3072,2048x4096,7168x4096
for v in 0 1 2 3 4; do
  AWQD_EXP_ST16D=$v timeout 150 $B/bench_awq_gemm --m 9,12,16 --shapes $shapes --sweep-pdl > /tmp/exp/v$v.log 2>&1
  echo "v$v rc=$?"
done
for r in 1 2; do
  timeout 100 .gpu/old8/bench_awq_gemm --m 1,2,4,5,6,8 --shapes qkv,o,gate_up,down,down_silu --no-sweep > /tmp/exp/st8-old-r$r.log 2>&1
  timeout 100 $B/bench_awq_gemm --m 1,2,4,5,6,8 --shapes qkv,o,gate_up,down,down_silu --no-sweep > /tmp/exp/st8-new-r$r.log 2>&1
done
tar -C /tmp/exp -cJf $OUT/logs.tar.xz $(cd /tmp/exp && ls)
# Table: st16 (forced, PDL) us per variant: shape:M -> best st16/sN over splits
for v in 0 1 2 3 4; do
  printf 'v%s ' $v
  awk '/every forced configuration/{f=1; next} /^## summary/{f=0} f && NF>2{best=""; bu=1e9; for(i=3;i<=NF;i++){split($i,a,"="); if(a[1] ~ /^st16\//){ if(a[2]+0<bu){bu=a[2]+0; best=a[1]} } } if(best!="") printf "%s:%s=%.2f(%s) ", $1, $2, bu, best} END{print ""}' /tmp/exp/v$v.log
done
echo "-- auto pdl_us (plan) v1:"; awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s:%s:%s:%s/%s ", s, $1, $2, $10, $NF} END{print ""}' /tmp/exp/v1.log | sed 's/tensor-core\///g'
for f in st8-old-r1 st8-new-r1 st8-old-r2 st8-new-r2; do
  printf '%s: ' $f; awk '/^## /{s=$2} /^ +[0-9]+ +[a-z-]+\//{printf "%s:%s:%s ", s, $1, $10} END{print ""}' /tmp/exp/$f.log
done
