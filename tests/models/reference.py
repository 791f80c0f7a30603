"""An independent numpy Llama forward (HF semantics, written from the HF modelling code's equations, no tinygrad)
used as the oracle for the tinygrad model."""
import numpy as np


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, inv_freq):
    # x: (H, T, hd); HF rotate_half: pairs (i, i + hd/2)
    ang = np.outer(pos, inv_freq)
    cos, sin = np.cos(ang), np.sin(ang)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def forward(sd: dict, cfg, tokens, inv_freq=None) -> np.ndarray:
    """logits (T, V) in float64 for one sequence."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    T, hd, H, KV = len(tokens), cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    if inv_freq is None:
        inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2) / hd)
    x = sd["model.embed_tokens.weight"][tokens]
    pos = np.arange(T)
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"], cfg.norm_eps)
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd).transpose(1, 0, 2)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        q, k = rope(q, pos, inv_freq), rope(k, pos, inv_freq)
        out = np.zeros((H, T, hd))
        for head in range(H):
            kvh = head // (H // KV)   # HF repeat_kv: query head j uses kv head j // n_rep
            s = q[head] @ k[kvh].T / np.sqrt(hd) + causal
            s = np.exp(s - s.max(-1, keepdims=True))
            out[head] = (s / s.sum(-1, keepdims=True)) @ v[kvh]
        x = x + out.transpose(1, 0, 2).reshape(T, H * hd) @ sd[p + "self_attn.o_proj.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        g, u = h @ sd[p + "mlp.gate_proj.weight"].T, h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ sd[p + "mlp.down_proj.weight"].T
    x = rms(x, sd["model.norm.weight"], cfg.norm_eps)
    head = sd["model.embed_tokens.weight"] if cfg.tie_embeddings else sd["lm_head.weight"]
    return x @ head.T
