#!/usr/bin/env bash
# GPU-machine side of the quantizer check (issue 4): HF transformers' perplexity of the AWQ
# checkpoint (dequantized by scripts/hf_perplexity.py from the SPEC formula alone) and of the
# fp16 fixture on both held-out texts, each next to awqd's figure for the same model directory
# name and text from .gpu/quant/awqd_perplexity.jsonl.
# Prepare on the host with scripts/gpu_quant_prep.sh, then on the GPU machine (carry .gpu/quant):
#   scripts/gpu_quant.sh        -> $OUT/hf_perplexity.jsonl (one line per model and text)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}
q=.gpu/quant
: > "$out/hf_perplexity.jsonl"
for model in "$q/llama-13m-awq" "$q/llama-13m"; do
  for text in "$q/text/austen-heldout.txt" "$q/text/pydoc-heldout.txt"; do
    expect=$(python3 - "$q/awqd_perplexity.jsonl" "$model" "$text" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if os.path.basename(r["model"].rstrip("/")) == os.path.basename(sys.argv[2]) and \
       os.path.basename(r["text"]) == os.path.basename(sys.argv[3]):
        print(r["perplexity"])
        break
PY
)
    python3 scripts/hf_perplexity.py --model "$model" --text "$text" ${expect:+--expect "$expect"} \
      | tee -a "$out/hf_perplexity.jsonl"
  done
done
