#!/usr/bin/env python3
"""Independent check of awqd's checkpoints and of `awqd perplexity`, for the GPU machine.

Reads a model directory written by `awqd quantize` (or any fp16 Hugging Face directory) with
safetensors + torch only, dequantizes every AWQ GEMM linear with the formula of SPEC section 2
(nothing from awqd and no AWQ library is used), loads the weights into transformers'
AutoModelForCausalLM and computes perplexity with the protocol of `awqd perplexity`:

  - paragraphs are runs of lines separated by blank (whitespace-only) lines, each encoded with
    the model's tokenizer.json without special tokens, joined by the newline token
    (<0x0A> in SentencePiece-style vocabularies, the byte-level 'Ċ' otherwise);
  - non-overlapping windows of --window tokens (the last may be shorter), no BOS; every token
    of a window after its first is scored; perplexity = exp(summed NLL / tokens scored);
  - fp32 compute; the dequantized weights are kept in fp32, as awqd's CPU executor keeps them.

  python3 scripts/hf_perplexity.py --model DIR --text FILE [--window 512] [--expect PPL]

Prints one JSON line. With --expect (awqd's figure), also the relative difference.
"""
import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

# Logical column j of a packed word sits at nibble AWQ_NIBBLE_OF[j] (SPEC section 2).
AWQ_NIBBLE_OF = [0, 4, 1, 5, 2, 6, 3, 7]


def unpack(packed):
    """int32 [R, C/8] -> int64 [R, C], 4-bit values in logical column order."""
    shifts = torch.tensor([4 * n for n in AWQ_NIBBLE_OF], dtype=torch.int64, device=packed.device)
    vals = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF
    return vals.reshape(packed.shape[0], -1)


def dequantize(qweight, qzeros, scales, group_size):
    """W[k][n] = (q[k][n] - z[k/G][n]) * s[k/G][n]; returned as nn.Linear's (N, K), fp32."""
    q = unpack(qweight).float()
    z = unpack(qzeros).float().repeat_interleave(group_size, dim=0)
    s = scales.float().repeat_interleave(group_size, dim=0)
    return ((q - z) * s).t().contiguous()


def load_state_dict(model_dir, group_size):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    raw = {}
    for name in files:
        raw.update(load_file(os.path.join(model_dir, name)))
    out, dequantized = {}, 0
    for name, t in raw.items():
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            out[base + ".weight"] = dequantize(t, raw[base + ".qzeros"], raw[base + ".scales"], group_size)
            dequantized += 1
        elif name.endswith(".qzeros") or name.endswith(".scales"):
            continue
        else:
            out[name] = t.float()
    return out, dequantized


def load_model(model_dir):
    """transformers' model for model_dir in fp32 on the GPU (if any), AWQ linears dequantized by
    the SPEC formula; returns (model, number of dequantized linears)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    quant = cfg.pop("quantization_config", None)
    group_size = quant["group_size"] if quant else 0
    cfg.pop("torch_dtype", None)
    cfg.pop("dtype", None)
    config = AutoConfig.for_model(**cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_config(config).float()
    state, dequantized = load_state_dict(model_dir, group_size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"lm_head.weight"} if cfg.get("tie_word_embeddings") else set()
    if set(missing) - allowed_missing or unexpected:
        sys.exit(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    if cfg.get("tie_word_embeddings"):
        model.tie_weights()
    return model.to(device).eval(), dequantized


def paragraphs(text):
    out, cur = [], []
    for line in text.split("\n"):
        if line.strip(" \t\r\f\v") == "":
            if cur:
                out.append("\n".join(cur))
                cur = []
        else:
            cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


def tokenize(tokenizer, text):
    newline = tokenizer.token_to_id("<0x0A>")
    if newline is None:
        newline = tokenizer.token_to_id("\u010a")
    if newline is None:
        sys.exit("the tokenizer has no single newline token")
    ids = []
    for p in paragraphs(text):
        if ids:
            ids.append(newline)
        ids.extend(tokenizer.encode(p, add_special_tokens=False).ids)
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16, help="full windows per forward pass")
    ap.add_argument("--expect", type=float, help="awqd's perplexity, to print the difference")
    args = ap.parse_args()

    model, dequantized = load_model(args.model)
    device = next(model.parameters()).device

    tokenizer = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    with open(args.text, encoding="utf-8") as f:
        ids = tokenize(tokenizer, f.read())
    W = args.window
    windows = [ids[i : i + W] for i in range(0, len(ids), W)]
    nll, scored = 0.0, 0
    with torch.no_grad():
        full = [w for w in windows if len(w) == W]
        rest = [w for w in windows if 2 <= len(w) < W]
        batches = [full[i : i + args.batch] for i in range(0, len(full), args.batch)] + [[w] for w in rest]
        for batch in batches:
            x = torch.tensor(batch, device=device)
            logits = model(input_ids=x).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
            )
            nll += loss.item()
            scored += x.shape[0] * (x.shape[1] - 1)
    ppl = math.exp(nll / scored)
    result = {
        "model": args.model,
        "text": os.path.basename(args.text),
        "perplexity": ppl,
        "tokens_evaluated": scored,
        "windows": len([w for w in windows if len(w) >= 2]),
        "text_tokens": len(ids),
        "dequantized_linears": dequantized,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "transformers_dtype": "float32",
    }
    if args.expect is not None:
        result["awqd_perplexity"] = args.expect
        result["relative_difference"] = (ppl - args.expect) / args.expect
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
