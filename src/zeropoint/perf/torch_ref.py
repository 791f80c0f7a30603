"""The PyTorch eager twin of `models/llama.py` (+ LoRA), for side-by-side benchmarks only.

Same architecture, same HF key names, same weights copied over from the tinygrad model (numpy, no pickle),
same loss (mean next-token cross-entropy, ignore -1) and the same AdamW update with global-norm clipping.
PyTorch is an optional extra: only `perf.bench` imports this module, and only when asked to compare; the
engine never does.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ZeropointError
from ..models.llama import _rope_tables_np


def require_torch():
    try:
        import torch
    except ImportError:
        raise ZeropointError("--compare torch needs PyTorch, an optional extra: pip install torch==2.13.0") from None
    return torch


def build_torch_model(cfg, weights: dict[str, np.ndarray], *, lora: dict | None = None,
                      adapters: dict[str, np.ndarray] | None = None, device: str = "cpu", dtype: str = "fp32"):
    """-> (torch module, trainable parameter list). `lora` = {"rank","alpha","targets"} with `adapters` named
    like PEFT (`...q_proj.lora_A.weight`) copied from the tinygrad run so both start identical."""
    torch = require_torch()
    nn, F = torch.nn, torch.nn.functional
    cdt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]

    class Lin(nn.Module):
        def __init__(self, i, o, lora_r=0, scale=0.0):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(o, i))
            self.r, self.scale = lora_r, scale
            if lora_r:
                self.lora_A = nn.Linear(i, lora_r, bias=False)
                self.lora_B = nn.Linear(lora_r, o, bias=False)

        def forward(self, x):
            y = x @ self.weight.to(x.dtype).T
            if self.r:
                y = y + (x @ self.lora_A.weight.to(x.dtype).T @ self.lora_B.weight.to(x.dtype).T) * self.scale
            return y

    targets = set()
    if lora:
        targets = set(lora["targets"])
        if "all_linear" in targets:
            targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    r = lora["rank"] if lora else 0
    sc = lora["alpha"] / lora["rank"] if lora else 0.0

    def L(name, i, o):
        return Lin(i, o, r if name in targets else 0, sc)

    class RMSNorm(nn.Module):
        def __init__(self, d, eps):
            super().__init__()
            self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

        def forward(self, x):
            x = x.float()
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    class Attn(nn.Module):
        def __init__(s):
            super().__init__()
            hd = cfg.head_dim
            s.q_proj, s.k_proj = L("q_proj", cfg.dim, cfg.n_heads * hd), L("k_proj", cfg.dim, cfg.n_kv_heads * hd)
            s.v_proj, s.o_proj = L("v_proj", cfg.dim, cfg.n_kv_heads * hd), L("o_proj", cfg.n_heads * hd, cfg.dim)

        def forward(s, x, cos, sin):
            B, T, _ = x.shape
            H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
            q = s.q_proj(x).view(B, T, H, hd).transpose(1, 2)
            k = s.k_proj(x).view(B, T, KV, hd).transpose(1, 2)
            v = s.v_proj(x).view(B, T, KV, hd).transpose(1, 2)

            def rope(t):
                tf = t.float()
                h = hd // 2
                rot = torch.cat([-tf[..., h:], tf[..., :h]], dim=-1)
                return (tf * cos + rot * sin).to(t.dtype)
            q, k = rope(q), rope(k)
            if H != KV:
                k = k.repeat_interleave(H // KV, dim=1)
                v = v.repeat_interleave(H // KV, dim=1)
            scores = (q @ k.transpose(-1, -2)).float() * (1.0 / math.sqrt(hd))
            mask = torch.full((T, T), float("-inf"), device=x.device).triu(1)
            att = (scores + mask).softmax(-1).to(x.dtype) @ v
            return s.o_proj(att.transpose(1, 2).reshape(B, T, H * hd))

    class MLP(nn.Module):
        def __init__(s):
            super().__init__()
            s.gate_proj, s.up_proj = L("gate_proj", cfg.dim, cfg.hidden_dim), L("up_proj", cfg.dim, cfg.hidden_dim)
            s.down_proj = L("down_proj", cfg.hidden_dim, cfg.dim)

        def forward(s, x):
            return s.down_proj(F.silu(s.gate_proj(x)) * s.up_proj(x))

    class Layer(nn.Module):
        def __init__(s):
            super().__init__()
            s.self_attn, s.mlp = Attn(), MLP()
            s.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
            s.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

        def forward(s, x, cos, sin):
            h = x + s.self_attn(s.input_layernorm(x).to(cdt), cos, sin).float()
            return h + s.mlp(s.post_attention_layernorm(h).to(cdt)).float()

    class Inner(nn.Module):
        def __init__(s):
            super().__init__()
            s.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
            s.layers = nn.ModuleList([Layer() for _ in range(cfg.n_layers)])
            s.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    class LlamaTorch(nn.Module):
        def __init__(s):
            super().__init__()
            s.model = Inner()
            if not cfg.tie_embeddings:
                s.lm_head = Lin(cfg.dim, cfg.vocab_size, r if "lm_head" in targets else 0, sc)
            key = tuple(sorted(cfg.rope_scaling.items())) if cfg.rope_scaling else None
            c, sn = _rope_tables_np(cfg.head_dim, cfg.max_seq_len, float(cfg.rope_theta), key)
            s.register_buffer("cos", torch.from_numpy(c.copy()), persistent=False)
            s.register_buffer("sin", torch.from_numpy(sn.copy()), persistent=False)

        def forward(s, tokens):
            T = tokens.shape[1]
            cos, sin = s.cos[:T], s.sin[:T]
            x = s.model.embed_tokens(tokens).float()
            for layer in s.model.layers:
                x = layer(x, cos, sin)
            h = s.model.norm(x).to(cdt)
            w = s.model.embed_tokens.weight if cfg.tie_embeddings else None
            if w is not None:
                return (h @ w.to(cdt).T).float()
            return s.lm_head(h).float()

    m = LlamaTorch()
    sd = m.state_dict()
    with torch.no_grad():
        for k, t in sd.items():
            if ".lora_" in k:
                continue
            if k not in weights:
                raise KeyError(f"torch twin: weight {k} missing from the tinygrad model")
            t.copy_(torch.from_numpy(np.ascontiguousarray(weights[k], dtype=np.float32)))
        for k, a in (adapters or {}).items():
            sd[k].copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    m = m.to(device)
    if lora:
        for n, p in m.named_parameters():
            p.requires_grad_(".lora_" in n)
    params = [p for p in m.parameters() if p.requires_grad]
    return m, params


def make_optimizer(params, ecfg):
    """AdamW with the engine's hyper-parameters. The engine decays only matrices (ndim >= 2), so do we."""
    torch = require_torch()
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": ecfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=ecfg.lr, betas=tuple(ecfg.betas), eps=ecfg.eps)


def train_step(model, params, opt, micro_batches, ecfg, lr: float) -> float:
    """One optimizer step over the micro-batches, the engine's way: mean loss / accum, clip, AdamW."""
    torch = require_torch()
    F = torch.nn.functional
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    losses = []
    for x, y in micro_batches:
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1)
        (loss / len(micro_batches)).backward()
        losses.append(loss.detach())
    if ecfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, ecfg.grad_clip)
    opt.step()
    return float(torch.stack(losses).mean())
