#!/usr/bin/env bash
# GPU-machine side of the quantizer check (issue 4): HF transformers' perplexity of the AWQ
# checkpoint (dequantized by scripts/hf_perplexity.py from the SPEC formula alone) and of the
# fp16 fixture on both held-out texts, each next to awqd's figure for the same model directory
# name and text from .gpu/quant/awqd_perplexity.jsonl.
# When .gpu/bundle.tar.xz (scripts/gpu_bundle.sh) is carried too, `awqd perplexity --device cuda`
# runs on the same models and texts: the CUDA executor (fp16 activations) next to both.
# Prepare on the host with scripts/gpu_quant_prep.sh, then on the GPU machine:
#   run(command="scripts/gpu_quant.sh", carry=[".gpu/quant", ".gpu/bundle.tar.xz"])
#     -> $OUT/hf_perplexity.jsonl, $OUT/cuda_perplexity.jsonl (one line per model and text)
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

if [[ -f .gpu/bundle.tar.xz ]]; then
  mkdir -p /tmp/awqd && tar -C /tmp/awqd -xJf .gpu/bundle.tar.xz
  export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  : > "$out/cuda_perplexity.jsonl"
  for model in "$q/llama-13m-awq" "$q/llama-13m"; do
    for text in "$q/text/austen-heldout.txt" "$q/text/pydoc-heldout.txt"; do
      /tmp/awqd/bin/awqd perplexity --device cuda --model "$model" --text "$text" --json \
        | tee -a "$out/cuda_perplexity.jsonl"
    done
  done
fi
