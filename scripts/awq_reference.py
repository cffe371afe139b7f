#!/usr/bin/env python3
"""A second, independent AWQ quantizer (Lin et al., MLSys 2024) in PyTorch, for the GPU machine.

It shares no code with `awqd quantize` (engine/quantize.cc): it follows the published algorithm
as AutoAWQ runs it, on Hugging Face transformers' own Llama modules, and measures the result with
`awqd perplexity`'s protocol (scripts/hf_perplexity.py). If awqd's quantizer had a bug that made
AWQ look weak on a model, this one would disagree with it.

  python3 scripts/awq_reference.py --model DIR --calib FILE --text FILE [--text FILE ...]
      [--samples 128] [--seq-len 512] [--group-size 128] [--variants awq,rtn,fp16,...]

Algorithm (per decoder layer; every layer's input is the unquantized model's hidden state, as in
AutoAWQ, where layer i + 1's input is computed from layer i before it is quantized):
  - calibration: the text tokenized paragraph by paragraph, joined by the newline token, cut into
    consecutive samples of --seq-len tokens (awqd quantize's samples);
  - scale search for [q, k, v] (inspected block: the attention), [o] after v when v and o have
    one shape, [gate, up] (block: the MLP), [down] (block: down itself): for a = i / 20, i < 20,
    s = x_mean^a / (w_mean^(1 - a) + 1e-4) (x_mean: mean |input| per channel; w_mean: mean over
    output rows of |w| / max |w| of its group), s /= sqrt(max s * min s); the s whose
    fake-quantized Q(W s) / s gives the block output nearest (MSE) the original's is kept;
  - the scales are folded into the preceding norm / linear, the kept inputs divided by them;
  - clip search for every linear but q and k: per (output row, group), max |w| shrunk by
    (1 - i / 20), i < 10, scored on 512 evenly spaced calibration tokens;
  - zero-point 4-bit round to nearest per group (fp16 scale, as a checkpoint stores it).
Variants: fp16 (no quantization), rtn, awq, awq-noclip, clip-only, awq-clipqk.
Prints one JSON line per (variant, text) and a per-layer log of the chosen alphas on stderr.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_perplexity as hp  # noqa: E402  (the checkpoint reader and the perplexity protocol)
from tokenizers import Tokenizer  # noqa: E402


def fake_quantize(w, group_size):
    """Zero-point 4-bit quantize-dequantize of w (N, K) per group of group_size inputs."""
    n, k = w.shape
    g = w.reshape(-1, group_size)
    lo, hi = g.amin(dim=1, keepdim=True), g.amax(dim=1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-5).half().float()  # stored as fp16
    zero = (-torch.round(lo / scale)).clamp(0, 15)
    q = (torch.round(g / scale) + zero).clamp(0, 15)
    return ((q - zero) * scale).reshape(n, k)


def weight_mean(weights, group_size):
    """Mean over output rows of |w| / max |w| of each weight's quantization group, per input."""
    w = torch.cat(weights, dim=0)
    g = w.abs().reshape(-1, group_size)
    g = g / (g.amax(dim=1, keepdim=True) + 1e-6)
    return g.reshape(w.shape).mean(dim=0)


def search_scale(linears, x, block, reference, group_size, duo=True, grid=20):
    """Best per-input-channel scale for `linears` (all fed by x); block() recomputes the inspected
    output with the current weights. Returns (scale, alpha, mse at best / mse of plain RTN)."""
    x_mean = x.abs().reshape(-1, x.shape[-1]).mean(dim=0)
    w_mean = weight_mean([l.weight for l in linears], group_size)
    originals = [l.weight.detach().clone() for l in linears]

    def loss_with(s):
        for l, w in zip(linears, originals):
            l.weight.data = fake_quantize(w * s, group_size) / s
        out = block()
        for l, w in zip(linears, originals):
            l.weight.data = w.clone()
        return (out - reference).float().pow(2).mean().item()

    rtn = loss_with(torch.ones_like(x_mean))
    best = (math.inf, None, 0.0)
    for i in range(grid):
        a = i / grid
        s = x_mean.pow(a) / (w_mean.pow(1 - a) + 1e-4) if duo else x_mean.pow(a)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        s[~torch.isfinite(s)] = 1
        loss = loss_with(s)
        if loss < best[0]:
            best = (loss, s, a)
    return best[1], best[2], best[0] / rtn if rtn > 0 else 1.0


def search_clip(weight, x, group_size, tokens=512, grid=20, max_shrink=0.5):
    """Per (output row, group) max |w| that minimises that group's output error on the kept
    tokens; returns the clamped weight."""
    n, k = weight.shape
    x = x.reshape(-1, k)
    x = x[:: max(1, x.shape[0] // tokens)]  # (T, K)
    xg = x.reshape(x.shape[0], k // group_size, group_size)  # (T, G#, G)
    w = weight.reshape(n, k // group_size, group_size)
    best_max = w.abs().amax(dim=-1, keepdim=True).clone()
    org_max = best_max.clone()
    best_err = torch.full_like(org_max, math.inf)
    for rows in torch.split(torch.arange(n, device=weight.device), 256):
        wr = w[rows]
        org_out = torch.einsum("tgk,ngk->ntg", xg, wr)
        for i in range(int(max_shrink * grid)):
            mx = org_max[rows] * (1 - i / grid)
            cur = torch.clamp(wr, -mx, mx)
            q = fake_quantize(cur.reshape(len(rows), k), group_size).reshape(wr.shape)
            err = (torch.einsum("tgk,ngk->ntg", xg, q) - org_out).pow(2).mean(dim=1)
            err = err.unsqueeze(-1)
            better = err < best_err[rows]
            best_err[rows] = torch.where(better, err, best_err[rows])
            best_max[rows] = torch.where(better, mx, best_max[rows])
    return torch.clamp(w, -best_max, best_max).reshape(n, k)


def calibration_samples(tokenizer, path, samples, seq_len):
    with open(path, encoding="utf-8") as f:
        ids = hp.tokenize(tokenizer, f.read())
    cut = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)][:samples]
    return torch.tensor(cut)


def layer_inputs(model, ids, chunk=16):
    """Every decoder layer's input hidden states over the calibration samples, and the model's
    final hidden state input of the last layer's successor (for the layer-output sanity check)."""
    layers = model.model.layers
    store = [[] for _ in range(len(layers) + 1)]
    hooks = []
    for i, layer in enumerate(layers):
        def pre(mod, args, kwargs, i=i):
            h = args[0] if args else kwargs["hidden_states"]
            store[i].append(h.detach())
        hooks.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    hooks.append(model.model.norm.register_forward_pre_hook(lambda m, a: store[-1].append(a[0].detach())))
    with torch.no_grad():
        for c in range(0, ids.shape[0], chunk):
            model(input_ids=ids[c : c + chunk].to(model.device))
    for h in hooks:
        h.remove()
    return [torch.cat(s, dim=0) for s in store]


def quantize(model, inputs, variant, group_size, log):
    cfg = model.config
    seq_len = inputs[0].shape[1]
    pos = torch.arange(seq_len, device=model.device)[None]
    cos, sin = model.model.rotary_emb(inputs[0][:1], pos)
    scale_search = variant in ("awq", "awq-noclip", "awq-clipqk")
    clip = variant in ("awq", "clip-only", "awq-clipqk")
    clip_qk = variant == "awq-clipqk"

    def attention(layer, x):  # x: post-norm input (S, T, D), in chunks
        outs = []
        for c in range(0, x.shape[0], 16):
            xc = x[c : c + 16]
            pe = (cos.expand(xc.shape[0], -1, -1), sin.expand(xc.shape[0], -1, -1))
            outs.append(layer.self_attn(hidden_states=xc, position_embeddings=pe, attention_mask=None)[0])
        return torch.cat(outs, dim=0)

    for li, layer in enumerate(model.model.layers):
        a, m = layer.self_attn, layer.mlp
        h = inputs[li]
        with torch.no_grad():
            # Inputs of every linear group, from the original layer.
            x_qkv = layer.input_layernorm(h)
            o_in = []
            hook = a.o_proj.register_forward_pre_hook(lambda mod, args: o_in.append(args[0].detach()))
            attn = attention(layer, x_qkv)
            hook.remove()
            x_o = torch.cat(o_in, dim=0)
            h2 = h + attn
            x_gu = layer.post_attention_layernorm(h2)
            x_down = m.act_fn(m.gate_proj(x_gu)) * m.up_proj(x_gu)
            out = h2 + m.down_proj(x_down)
            if li + 1 < len(inputs):
                err = (out - inputs[li + 1]).abs().max().item()
                ref = inputs[li + 1].abs().max().item()
                if err > 1e-3 * max(ref, 1.0):
                    sys.exit(f"layer {li}: recomputed output differs from the model's by {err} "
                             f"(max |h| {ref}): the sub-block calls do not match the model")
            if variant == "rtn":
                pass
            elif scale_search:
                detail = []
                # [q, k, v] against the attention output.
                s, al, r = search_scale([a.q_proj, a.k_proj, a.v_proj], x_qkv,
                                        lambda: attention(layer, x_qkv), attn, group_size)
                detail.append(f"qkv a={al:.2f} mse x{r:.2f}")
                s_o = None
                if a.v_proj.weight.shape == a.o_proj.weight.shape:
                    s_o, al, r = search_scale([a.o_proj], x_o, lambda: a.o_proj(x_o), a.o_proj(x_o), group_size)
                    detail.append(f"o a={al:.2f} mse x{r:.2f}")
                mlp_ref = m.down_proj(x_down)
                s_gu, al, r = search_scale([m.gate_proj, m.up_proj], x_gu, lambda: m(x_gu), mlp_ref, group_size)
                detail.append(f"gate_up a={al:.2f} mse x{r:.2f}")
                s_d, al, r = search_scale([m.down_proj], x_down, lambda: m.down_proj(x_down), mlp_ref, group_size)
                detail.append(f"down a={al:.2f} mse x{r:.2f}")
                # Fold: norm / previous linear divided by s, the group's inputs multiplied.
                layer.input_layernorm.weight.data = (layer.input_layernorm.weight / s).half().float()
                for l in (a.q_proj, a.k_proj, a.v_proj):
                    l.weight.data = l.weight * s
                x_qkv = x_qkv / s
                if s_o is not None:
                    a.v_proj.weight.data = a.v_proj.weight / s_o[:, None]
                    a.o_proj.weight.data = a.o_proj.weight * s_o
                    x_o = x_o / s_o
                layer.post_attention_layernorm.weight.data = (layer.post_attention_layernorm.weight / s_gu).half().float()
                for l in (m.gate_proj, m.up_proj):
                    l.weight.data = l.weight * s_gu
                x_gu = x_gu / s_gu
                m.up_proj.weight.data = m.up_proj.weight / s_d[:, None]
                m.down_proj.weight.data = m.down_proj.weight * s_d
                x_down = x_down / s_d
                log(f"layer {li}: " + ", ".join(detail))
            if clip:
                targets = [(a.v_proj, x_qkv), (a.o_proj, x_o), (m.gate_proj, x_gu), (m.up_proj, x_gu),
                           (m.down_proj, x_down)]
                if clip_qk:
                    targets += [(a.q_proj, x_qkv), (a.k_proj, x_qkv)]
                for l, x in targets:
                    l.weight.data = search_clip(l.weight, x, group_size)
            for l in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
                l.weight.data = fake_quantize(l.weight, group_size)


def perplexity(model, tokenizer, path, window=512, batch=16):
    with open(path, encoding="utf-8") as f:
        ids = hp.tokenize(tokenizer, f.read())
    windows = [ids[i : i + window] for i in range(0, len(ids), window)]
    full = [w for w in windows if len(w) == window]
    rest = [w for w in windows if 2 <= len(w) < window]
    nll, scored = 0.0, 0
    with torch.no_grad():
        for b in [full[i : i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]:
            x = torch.tensor(b, device=model.device)
            logits = model(input_ids=x).logits.float()
            nll += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
            scored += x.shape[0] * (x.shape[1] - 1)
    return math.exp(nll / scored), scored


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--text", action="append", required=True)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--variants", default="fp16,rtn,awq,clip-only,awq-noclip,awq-clipqk")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tokenizer = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = calibration_samples(tokenizer, args.calib, args.samples, args.seq_len)
    for variant in args.variants.split(","):
        start = time.time()
        model, _ = hp.load_model(args.model)
        # The sub-block calls pass no mask and rely on sdpa's causal default; the per-layer check
        # in quantize() stops the run if that does not reproduce the model's own forward pass.
        model.config._attn_implementation = "sdpa"
        if variant != "fp16":
            inputs = layer_inputs(model, ids)
            quantize(model, inputs, variant, args.group_size,
                     lambda s: print(f"[{variant}] {s}", file=sys.stderr, flush=True))
            del inputs
        quant_s = time.time() - start
        for text in args.text:
            ppl, scored = perplexity(model, tokenizer, text)
            print(json.dumps({"variant": variant, "text": os.path.basename(text), "perplexity": ppl,
                              "tokens_evaluated": scored, "calibration": [int(ids.shape[0]), int(ids.shape[1])],
                              "group_size": args.group_size, "quantize_s": round(quant_s, 1),
                              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}),
                  flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
