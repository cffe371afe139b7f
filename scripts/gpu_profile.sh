#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the bundle of scripts/gpu_bundle.sh: where the time
# of an engine step goes, from Nsight Systems' per-kernel summary of an `awqd bench` run.
#   run(command="scripts/gpu_profile.sh [TP...]", carry=[".gpu/bundle.tar.xz"], kind=...)
# For each tensor-parallel degree (default 1): awqd synth --like ${AWQD_LIKE:-llama3-8b}, then
# nsys profile of `awqd bench --workload ${AWQD_WORKLOAD:-decode-1}`; writes the kernel summary
# (cuda_gpu_kern_sum) and the API summary under $OUT and prints the top kernels grouped into
# GEMM / attention / all-reduce / other. Skips (rc 0, says so) where nsys is absent.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT" /tmp/awqd
tar -C /tmp/awqd -xJf .gpu/bundle.tar.xz
bin=/tmp/awqd/bin
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
if [[ -z $nsys ]]; then
  echo "nsys not found on this machine: no profile"
  exit 0
fi
for d in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
  [[ -e $d/libnccl.so.2 ]] && export AWQD_NCCL_LIBRARY=$d/libnccl.so.2 && break
done
if [[ -z ${AWQD_NCCL_LIBRARY:-} ]]; then
  d=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null) &&
    [[ -e $d/lib/libnccl.so.2 ]] && export AWQD_NCCL_LIBRARY=$d/lib/libnccl.so.2
fi
model=/tmp/awqd/model
"$bin/awqd" synth --like "${AWQD_LIKE:-llama3-8b}" --out $model >"$OUT/profile.log" 2>&1
for tp in "${@:-1}"; do
  rep=/tmp/awqd/prof-tp$tp
  timeout 240 "$nsys" profile -o $rep --force-overwrite true -t cuda --cuda-graph-trace=node \
    "$bin/awqd" bench --quiet --model $model --workload "${AWQD_WORKLOAD:-decode-1}" --tensor-parallel "$tp" \
    >>"$OUT/profile.log" 2>&1
  "$nsys" stats -q -r cuda_gpu_kern_sum -f csv -o "$OUT/tp$tp" $rep.nsys-rep >>"$OUT/profile.log" 2>&1
  csv=$(ls "$OUT"/tp${tp}_cuda_gpu_kern_sum*.csv 2>/dev/null | head -1)
  [[ -n $csv ]] || { echo "tp $tp: no kernel summary (see profile.log)"; continue; }
  python3 - "$csv" "$tp" <<'PY'
import csv, sys, re
rows = list(csv.DictReader(open(sys.argv[1])))
def cat(name):
    n = name.lower()
    if re.search(r"awq|gemm|cutlass|sm90|xmma|gemv|cublas|matmul", n): return "GEMM"
    if "attention" in n or "attn" in n: return "attention"
    if "allreduce" in n or "all_reduce" in n or "nccl" in n or "p2p" in n: return "all-reduce"
    if "sample" in n or "argmax" in n or "topk" in n: return "sampler"
    return "other"
tot = {}
allns = 0
for r in rows:
    ns = float(r["Total Time (ns)"]); allns += ns
    tot[cat(r["Name"])] = tot.get(cat(r["Name"]), 0) + ns
print(f"## tp {sys.argv[2]}: GPU kernel time by category (rank 0 + others, whole run)")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"  {k:<11} {v/1e6:9.2f} ms  {100*v/allns:5.1f} %")
print("  top kernels:")
for r in sorted(rows, key=lambda r: -float(r["Total Time (ns)"]))[:12]:
    print(f"   {float(r['Total Time (ns)'])/1e6:8.2f} ms {int(r['Instances']):7d} x {float(r['Avg (ns)'])/1e3:7.2f} us  {r['Name'][:90]}")
PY
done
