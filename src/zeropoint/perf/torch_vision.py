"""The PyTorch eager twins of `models/vit.py` and `models/clip.py`, for side-by-side benchmarks only.

The tinygrad models are plain functions over a flat dict of fp32 tensors; so are these, over a dict of
`torch.nn.Parameter` with the same names and shapes, filled from the same numpy arrays. Every step mirrors the
tinygrad code: patches as reshape + matmul, a class token, pre-norm blocks with LayerNorm statistics and the
softmax in fp32, exact-erf GELU or quick-GELU, cls or mean pooling; the CLIP text tower pools at the first
end-of-text token, and the loss is the symmetric InfoNCE with the temperature clamped at 100. The optimizer and
the step are `torch_ref`'s (the engine's AdamW, clipping and accumulation). PyTorch is an optional extra: only
the vision bench imports this module, and only when asked to compare.
"""
from __future__ import annotations

import math

import numpy as np

from .torch_ref import require_torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_params(arrays: dict[str, np.ndarray], device: str = "cpu") -> dict:
    """name -> trainable fp32 Parameter holding a copy of the array (the engine's fp32 masters)."""
    torch = require_torch()
    return {k: torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(device))
            for k, v in arrays.items()}


def _layer_norm(x, w, b, eps):
    F = require_torch().nn.functional
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps).to(x.dtype)


def _linear(x, w, b=None):
    y = x @ w.to(x.dtype).T
    return y if b is None else y + b.to(x.dtype)


def _act(x, act: str):
    torch = require_torch()
    if act == "gelu":
        return torch.nn.functional.gelu(x)          # exact erf form, as models/vit.py
    return x * torch.sigmoid(1.702 * x)


def block(p: dict, pre: str, x, heads: int, act: str, eps: float, causal: bool = False):
    torch = require_torch()
    B, T, D = x.shape
    hd = D // heads
    h = _layer_norm(x, p[pre + "ln1.w"], p[pre + "ln1.b"], eps)
    qkv = _linear(h, p[pre + "qkv.w"], p[pre + "qkv.b"]).reshape(B, T, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    att = (q @ k.transpose(-1, -2)).float() * (1.0 / math.sqrt(hd))
    if causal:
        att = att + torch.full((T, T), float("-inf"), device=x.device).triu(1)
    att = att.softmax(-1).to(x.dtype)
    a = (att @ v).transpose(1, 2).reshape(B, T, D)
    x = x + _linear(a, p[pre + "proj.w"], p[pre + "proj.b"])
    h = _layer_norm(x, p[pre + "ln2.w"], p[pre + "ln2.b"], eps)
    return x + _linear(_act(_linear(h, p[pre + "fc1.w"], p[pre + "fc1.b"]), act), p[pre + "fc2.w"], p[pre + "fc2.b"])


def vit_features(p: dict, cfg, x, prefix: str = "", dtype: str = "fp32"):
    torch = require_torch()
    B, C, H, W = x.shape
    P, D = cfg.patch_size, cfg.dim
    x = x.to(getattr(torch, DTYPES[dtype]))
    patches = x.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // P) * (W // P), C * P * P)
    h = _linear(patches, p[prefix + "patch.w"].reshape(D, -1), p.get(prefix + "patch.b"))
    h = torch.cat([p[prefix + "cls"].to(h.dtype).expand(B, 1, D), h], 1) + p[prefix + "pos"].to(h.dtype)
    if cfg.pre_norm:
        h = _layer_norm(h, p[prefix + "ln_pre.w"], p[prefix + "ln_pre.b"], cfg.eps)
    for i in range(cfg.depth):
        h = block(p, f"{prefix}blocks.{i}.", h, cfg.heads, cfg.act, cfg.eps)
    h = _layer_norm(h, p[prefix + "norm.w"], p[prefix + "norm.b"], cfg.eps)
    return h[:, 0] if cfg.pool == "cls" else h[:, 1:].mean(1)


def vit_forward(p: dict, cfg, x, dtype: str = "fp32"):
    return _linear(vit_features(p, cfg, x, dtype=dtype), p["head.w"], p["head.b"]).float()


def classification_loss(p: dict, cfg, label_smoothing: float = 0.0, dtype: str = "fp32"):
    """(images, labels) -> mean cross-entropy, the loss `recipes/vit_classify.py` trains."""
    F = require_torch().nn.functional
    return lambda x, y: F.cross_entropy(vit_forward(p, cfg, x, dtype), y.long(), label_smoothing=label_smoothing)


def encode_text(p: dict, cfg, ids, dtype: str = "fp32"):
    torch = require_torch()
    t = cfg.text
    T = ids.shape[1]
    h = (p["text.tok"][ids.long()] + p["text.pos"][:T]).to(getattr(torch, DTYPES[dtype]))
    for i in range(t.depth):
        h = block(p, f"text.blocks.{i}.", h, t.heads, t.act, t.eps, causal=True)
    h = _layer_norm(h, p["text.norm.w"], p["text.norm.b"], t.eps)
    is_eos = (ids == t.eos_id).float()
    first = is_eos * (is_eos.cumsum(1) == 1).float()
    return _linear((first.unsqueeze(-1).to(h.dtype) * h).sum(1), p["text_proj"]).float()


def contrastive_loss(p: dict, cfg, dtype: str = "fp32"):
    """(images, ids) -> symmetric InfoNCE, the loss `recipes/clip_contrastive.py` trains."""
    torch = require_torch()
    F = torch.nn.functional

    def norm(z):
        return z / (z * z).sum(-1, keepdim=True).add(1e-12).sqrt()

    def loss(x, ids):
        img = norm(_linear(vit_features(p, cfg.vision, x, prefix="visual.", dtype=dtype), p["visual_proj"]).float())
        txt = norm(encode_text(p, cfg, ids, dtype))
        logits = p["logit_scale"].exp().clamp(max=100.0).reshape(1, 1) * (img @ txt.T)
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss


def train_step(loss_fn, params: list, opt, micro_batches, ecfg, lr: float) -> float:
    """One optimizer step the engine's way (mean loss / accum, global-norm clip, AdamW); -> mean loss."""
    torch = require_torch()
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    losses = []
    for batch in micro_batches:
        loss = loss_fn(*batch)
        (loss / len(micro_batches)).backward()
        losses.append(loss.detach())
    if ecfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, ecfg.grad_clip)
    opt.step()
    return float(torch.stack(losses).mean())
