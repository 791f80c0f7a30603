"""An independent float64 numpy Llama forward (HF semantics, written from the HF modelling code's equations, no
tinygrad). Two uses: the oracle the tinygrad model is tested against, and the reference that export parity
gates a different runtime against (an fp32 runtime's logits differ from fp32 tinygrad's by both runtimes' rounding;
against this oracle they differ by the artifact's own error only)."""
from __future__ import annotations

import numpy as np

from .llama import rope_inv_freq


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, inv_freq):
    # x: (..., T, hd); HF rotate_half: pairs (i, i + hd/2)
    ang = np.outer(pos, inv_freq)
    cos, sin = np.cos(ang), np.sin(ang)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def forward_batch(sd: dict, cfg, tokens: np.ndarray, inv_freq: np.ndarray | None = None,
                  hessians: dict | None = None) -> np.ndarray:
    """(B, T) int tokens -> (B, T, V) float64 logits. `sd`: HF-named weights (any float dtype).

    With a `hessians` dict, X^T X of every projection's input (B*T rows) is added into it under the weight's name
    (q/k/v share one array, as do gate/up; the head's input under lm_head.weight), and the logits are not
    computed: returns None. That is GPTQ's calibration."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}

    def seen(x, *names):
        if hessians is not None:
            x = x.reshape(-1, x.shape[-1])
            h = hessians.setdefault(names[0], np.zeros((x.shape[1], x.shape[1])))
            h += x.T @ x
            for n in names[1:]:
                hessians[n] = h
    tokens = np.asarray(tokens)
    B, T = tokens.shape
    hd, H, KV = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    if inv_freq is None:
        inv_freq = rope_inv_freq(hd, cfg.rope_theta, cfg.rope_scaling)
    x = sd["model.embed_tokens.weight"][tokens]
    pos = np.arange(T)
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"], cfg.norm_eps)
        seen(h, *(p + f"self_attn.{n}_proj.weight" for n in "qkv"))
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
        q, k = rope(q, pos, inv_freq), rope(k, pos, inv_freq)
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)   # HF repeat_kv: head j uses kv j // n_rep
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + causal
        s = np.exp(s - s.max(-1, keepdims=True))
        out = (s / s.sum(-1, keepdims=True)) @ v
        out = out.transpose(0, 2, 1, 3).reshape(B, T, H * hd)
        seen(out, p + "self_attn.o_proj.weight")
        x = x + out @ sd[p + "self_attn.o_proj.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        seen(h, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")
        g, u = h @ sd[p + "mlp.gate_proj.weight"].T, h @ sd[p + "mlp.up_proj.weight"].T
        a = g / (1 + np.exp(-g)) * u
        seen(a, p + "mlp.down_proj.weight")
        x = x + a @ sd[p + "mlp.down_proj.weight"].T
    x = rms(x, sd["model.norm.weight"], cfg.norm_eps)
    if hessians is not None:
        seen(x, "lm_head.weight")
        return None
    head = sd["model.embed_tokens.weight"] if cfg.tie_embeddings else sd["lm_head.weight"]
    return x @ head.T


def linear_input_hessians(sd: dict, cfg, tokens: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """X^T X (float64) of each projection weight's input over all (B, T) `tokens`, `batch` sequences at a time,
    keyed by the weight's HF name: the statistics GPTQ and importance-weighted rounding need."""
    hessians: dict[str, np.ndarray] = {}
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    for i in range(0, len(tokens), batch):
        forward_batch(sd, cfg, tokens[i:i + batch], hessians=hessians)
    return hessians


def forward(sd: dict, cfg, tokens, inv_freq: np.ndarray | None = None) -> np.ndarray:
    """(T,) tokens -> (T, V) float64 logits for one sequence. Without `inv_freq`, plain (unscaled) RoPE, so a test
    can show that scaling matters."""
    if inv_freq is None:
        inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim)
    return forward_batch(sd, cfg, np.asarray(tokens)[None], inv_freq)[0]
