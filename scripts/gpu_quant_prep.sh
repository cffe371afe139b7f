#!/usr/bin/env bash
# Host side of the quantizer's GPU check (issue 4): puts into .gpu/quant/ (git-ignored, about
# 46 MB; carry it with the device tool) the AWQ checkpoint `awqd quantize` wrote, the fp16
# fixture it came from, the held-out texts, and awqd's own perplexities of them
# (awqd_perplexity.jsonl: computed here with `awqd perplexity --json`, which takes a while on the
# CPU, unless AWQD_PPL_JSONL names a file of such lines already computed), so that
# scripts/gpu_quant.sh can compare them with HF transformers' on the GPU machine.
# Usage: [AWQD_PPL_JSONL=FILE] scripts/gpu_quant_prep.sh [AWQ_DIR, default out/llama-13m-awq]
set -euo pipefail
cd "$(dirname "$0")/.."
awq=${1:-out/llama-13m-awq}
fx=${AWQD_FIXTURES:-../shared/fixtures}
[[ -f $awq/config.json ]] || { echo "no AWQ checkpoint at $awq: run awqd quantize first (docs/PERF.md)" >&2; exit 1; }
rm -rf .gpu/quant && mkdir -p .gpu/quant/text
cp -r "$awq" .gpu/quant/llama-13m-awq
cp -r "$fx/llama-13m" .gpu/quant/llama-13m
cp "$fx/text/austen-heldout.txt" "$fx/text/pydoc-heldout.txt" .gpu/quant/text/
chmod -R u+w .gpu/quant
if [[ -n ${AWQD_PPL_JSONL:-} ]]; then
  cp "$AWQD_PPL_JSONL" .gpu/quant/awqd_perplexity.jsonl
else
  for m in llama-13m-awq llama-13m; do
    for t in austen pydoc; do
      build/bin/awqd perplexity --model .gpu/quant/$m --text .gpu/quant/text/$t-heldout.txt --json
    done
  done > .gpu/quant/awqd_perplexity.jsonl
fi
du -sh .gpu/quant
