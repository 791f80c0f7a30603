"""Model FLOPs of one training step, from the config alone (no profiler, no guessing).

Counting (the usual "6N" of Kaplan et al. / PaLM appendix B, with the LoRA case spelled out):
- N_mm: parameters that take part in a matmul per token: every projection of every layer plus the LM head
  (the tied embedding counts once, as the head; the embedding lookup itself is free). Norm weights are
  elementwise and left out.
- forward 2*N_mm per token; backward 2*N_mm for activation gradients (needed even through frozen weights)
  plus 2*N_trainable_mm for weight gradients. Full finetune: 6*N_mm. LoRA: 4*N_mm + 6*N_lora (the adapters
  run forward, both gradients).
- attention scores and values: QK^T and AV cost 2*T*n_heads*head_dim FLOPs each per token per layer forward,
  so 4*L*T*H*hd forward and 12*L*T*H*hd forward+backward (PaLM's 12*L*H*Q*T; causal masking not discounted,
  as in PaLM's MFU).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class StepFlops:
    n_matmul_params: int        # N_mm
    n_trainable_matmul: int     # parameters that receive weight gradients
    n_lora: int                 # adapter parameters (0 for full finetuning)
    per_token_dense: int        # 6N-style term per token
    per_token_attention: int    # 12*L*T*H*hd per token
    per_token: int
    tokens_per_step: int
    per_step: int

    def to_dict(self) -> dict:
        return asdict(self)


def matmul_params(cfg) -> int:
    """Projection weights of all layers + the LM head, for a LlamaConfig-like object."""
    d, hd = cfg.dim, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2
    mlp = 3 * d * cfg.hidden_dim
    return cfg.n_layers * (attn + mlp) + d * cfg.vocab_size


def attention_flops_per_token(cfg, seq_len: int) -> int:
    return 12 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim


def step_flops(cfg, *, seq_len: int, tokens_per_step: int, method: str = "full", n_lora: int = 0) -> StepFlops:
    """FLOPs of one optimizer step over `tokens_per_step` tokens (all micro-batches) of length `seq_len`."""
    n = matmul_params(cfg)
    if method == "full":
        dense, trainable = 6 * n, n
    elif method == "lora":
        dense, trainable = 4 * n + 6 * n_lora, n_lora
    else:
        raise ValueError(f"method must be 'full' or 'lora' (got {method!r})")
    att = attention_flops_per_token(cfg, seq_len)
    per_tok = dense + att
    return StepFlops(n_matmul_params=n, n_trainable_matmul=trainable, n_lora=n_lora, per_token_dense=dense,
                     per_token_attention=att, per_token=per_tok, tokens_per_step=tokens_per_step,
                     per_step=per_tok * tokens_per_step)


def mfu(flops_per_step: float, step_s: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the device peak; None without a peak."""
    if not peak_flops or step_s <= 0:
        return None
    return flops_per_step / step_s / peak_flops


# ---- vision: per image (ViT) and per image-caption pair (CLIP) -----------------------------------------------
@dataclass
class ImageFlops:
    """Model FLOPs of the vision recipes. forward: 2 per multiply-add of every matmul (patch embedding,
    q/k/v, QK^T, AV, output projection, MLP, head or projections); training: forward + backward, where backward
    costs twice the forward (activation and weight gradients) except for the patch embedding, whose input (the
    image) needs no gradient: 4 per multiply-add there instead of 6. Norms, softmax and GELU are left out, as
    in the 6N count."""
    forward_per_sample: int
    train_per_sample: int
    samples_per_step: int
    per_step: int
    unit: str                   # "image" or "image-caption pair"

    def to_dict(self) -> dict:
        return asdict(self)


def tower_macs(tokens: int, dim: int, mlp_dim: int, depth: int) -> int:
    """Multiply-adds of `depth` pre-norm blocks over one sequence of `tokens`."""
    return depth * (tokens * (3 * dim * dim + dim * dim + 2 * dim * mlp_dim) + 2 * tokens * tokens * dim)


def vit_patch_macs(cfg) -> int:
    return cfg.num_patches * cfg.channels * cfg.patch_size ** 2 * cfg.dim


def vit_flops(cfg, *, images_per_step: int = 1) -> ImageFlops:
    """FLOPs per image of a ViTConfig-like object, and per optimizer step of `images_per_step` images."""
    patch = vit_patch_macs(cfg)
    rest = tower_macs(cfg.seq_len, cfg.dim, cfg.mlp_dim, cfg.depth) + cfg.dim * cfg.num_classes
    fwd, train = 2 * (patch + rest), 4 * patch + 6 * rest
    return ImageFlops(fwd, train, images_per_step, train * images_per_step, "image")


def clip_flops(cfg, *, batch: int, pairs_per_step: int) -> ImageFlops:
    """FLOPs per image-caption pair of a CLIPConfig-like object in micro-batches of `batch` pairs (the B x B
    similarity matrix makes the per-pair cost grow with the batch): image tower + projection, text tower over
    the full context + projection of the pooled token, and the pair's row of the similarity matrix."""
    v, t, B = cfg.vision, cfg.text, batch
    patch = vit_patch_macs(v)
    rest = (tower_macs(v.seq_len, v.dim, v.mlp_dim, v.depth) + v.dim * cfg.embed_dim
            + tower_macs(t.context, t.dim, t.mlp_dim, t.depth) + t.dim * cfg.embed_dim + B * cfg.embed_dim)
    fwd, train = 2 * (patch + rest), 4 * patch + 6 * rest
    return ImageFlops(fwd, train, pairs_per_step, train * pairs_per_step, "image-caption pair")
