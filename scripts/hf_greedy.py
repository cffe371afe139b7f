#!/usr/bin/env python3
"""Greedy generations of awqd's CUDA engine against HF transformers on the same weights (issue 8).

For each prompt of the fixture's reference-outputs.json: transformers (weights loaded as
scripts/hf_perplexity.py does: AWQ linears dequantized by the SPEC formula) generates greedily in
fp16 and, step by step in fp32, records the top-2 logit margin; `awqd generate --device cuda`
generates from the same ids. The two must agree up to the first step whose fp32 margin is below
0.05 (where an fp16 engine may legitimately pick the other token). Prints one JSON line per
prompt; exits 1 on a disagreement before a near-tie.

    python3 scripts/hf_greedy.py --model DIR --awqd /tmp/awqd/bin/awqd --reference reference-outputs.json
"""
import argparse
import copy
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_perplexity import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--awqd", required=True, help="the awqd binary")
    ap.add_argument("--reference", required=True, help="reference-outputs.json (its prompt ids are used)")
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    with open(args.reference) as f:
        prompts = [p["ids"] for p in json.load(f)["prompts"]]
    model, dequantized = load_model(args.model)
    model16 = copy.deepcopy(model).half()
    ok = True
    for ids in prompts:
        x = torch.tensor([ids], device="cuda")
        with torch.no_grad():
            # fp32 step by step: the margins.
            margins, seq = [], list(ids)
            for _ in range(args.tokens):
                logits = model(torch.tensor([seq], device="cuda")).logits[0, -1].float()
                top = torch.topk(logits, 2).values
                margins.append(float(top[0] - top[1]))
                seq.append(int(logits.argmax()))
            fp32 = seq[len(ids):]
            out = model16.generate(x, max_new_tokens=args.tokens, do_sample=False, min_new_tokens=args.tokens)
            hf16 = out[0, len(ids):].tolist()
        res = subprocess.run([args.awqd, "generate", "--device", "cuda", "--model", args.model, "--prompt-ids",
                              json.dumps(ids), "--temperature", "0", "--max-tokens", str(args.tokens), "--ignore-eos",
                              "--json"], capture_output=True, text=True, check=True)
        ours = json.loads(res.stdout)["token_ids"]
        trusted = next((i for i, m in enumerate(margins) if m < 0.05), len(margins))
        same16 = next((i for i, (a, b) in enumerate(zip(ours, hf16)) if a != b), min(len(ours), len(hf16)))
        same32 = next((i for i, (a, b) in enumerate(zip(ours, fp32)) if a != b), min(len(ours), len(fp32)))
        agree = ours[:trusted] == hf16[:trusted]
        ok &= agree
        print(json.dumps({"model": os.path.basename(args.model.rstrip("/")), "dequantized_linears": dequantized,
                          "prompt_tokens": len(ids), "first_near_tie": trusted, "equal_to_hf_fp16": same16,
                          "equal_to_hf_fp32": same32, "agree_before_near_tie": agree}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
