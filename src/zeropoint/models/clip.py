"""CLIP in one file: a ViT image tower, a causal-transformer text tower, projections, a learnable temperature.

    cfg = clip_config("clip-emoji-tiny", vocab_size=tok.get_vocab_size())
    params = init_clip(cfg, seed=0)
    img, txt = clip_embed(params, cfg, images, ids)        # L2-normalised (B, embed_dim) each
    loss = clip_loss(params, img, txt)                      # symmetric InfoNCE

Layout follows OpenAI CLIP / HF `CLIPModel`: the image tower has a class token, no patch bias, an extra
LayerNorm on the embeddings and quick-GELU; the text tower pools the hidden state at the first end-of-text
token (padding is also end-of-text, so the causal mask alone keeps padding out of the pooled state).
The temperature is stored as log(1/0.07) and clamped at 100 when used, as in the paper.

Tokenizer: a byte-level BPE trained on the training captions (`train_caption_tokenizer`), with CLIP's
`<|startoftext|>` / `<|endoftext|>` specials. Byte-level so unseen words still encode; small vocab so the
embedding table stays cheap on a CPU. It is saved as `tokenizer.json` (HF `tokenizers` format).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tinygrad import Tensor, dtypes
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .memory import PRECISION_BYTES, training_memory
from .vit import (
    ViTConfig,
    block,
    block_param_count,
    init_block,
    init_vit_arrays,
    layer_norm,
    linear,
    to_tensors,
    tower_activation_bytes,
    vit_activation_bytes,
    vit_features,
    vit_param_count,
)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    context: int = 77
    dim: int = 512
    depth: int = 12
    heads: int = 8
    mlp_dim: int = 2048
    act: str = "quick_gelu"
    eps: float = 1e-5
    bos_id: int = 49406
    eos_id: int = 49407


@dataclass(frozen=True)
class CLIPConfig:
    vision: ViTConfig = field(default_factory=lambda: ViTConfig(224, 32, 3, 768, 12, 12, 3072, 0, "cls", "quick_gelu",
                                                                1e-5, False, True))
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        return cls(vision=ViTConfig.from_dict(d["vision"]), text=TextConfig(**d["text"]), embed_dim=d["embed_dim"],
                   logit_scale_init=d["logit_scale_init"])


def _clip_vision(image_size, patch, dim, depth, heads, mlp) -> ViTConfig:
    return ViTConfig(image_size, patch, 3, dim, depth, heads, mlp, num_classes=0, pool="cls", act="quick_gelu",
                     eps=1e-5, patch_bias=False, pre_norm=True)


CLIP_CONFIGS: dict[str, CLIPConfig] = {
    "clip-vit-b32": CLIPConfig(),
    "clip-vit-b16": CLIPConfig(vision=_clip_vision(224, 16, 768, 12, 12, 3072)),
    # emoji at 32x32 (patch 8: 16 tokens) and short captions: trains in minutes on a shared 2-core CPU
    "clip-emoji-tiny": CLIPConfig(vision=_clip_vision(32, 8, 64, 2, 2, 128),
                                  text=TextConfig(vocab_size=1024, context=16, dim=64, depth=2, heads=2, mlp_dim=128,
                                                  bos_id=0, eos_id=1), embed_dim=64),
    # for tests: seconds per step
    "clip-micro": CLIPConfig(vision=_clip_vision(16, 8, 32, 1, 2, 64),
                             text=TextConfig(vocab_size=300, context=12, dim=32, depth=1, heads=2, mlp_dim=64,
                                             bos_id=0, eos_id=1), embed_dim=32),
}


def clip_config(name: str, *, vocab_size: int | None = None, bos_id: int | None = None, eos_id: int | None = None,
                vision: dict | None = None, text: dict | None = None, **over) -> CLIPConfig:
    if name not in CLIP_CONFIGS:
        raise KeyError(f"unknown CLIP config {name!r}; known: {', '.join(CLIP_CONFIGS)}")
    c = CLIP_CONFIGS[name]
    t = dict(text or {})
    for k, v in (("vocab_size", vocab_size), ("bos_id", bos_id), ("eos_id", eos_id)):
        if v is not None:
            t[k] = v
    return replace(c, vision=replace(c.vision, **(vision or {})), text=replace(c.text, **t), **over)


# ---- init / forward ------------------------------------------------------------------------------------------
def init_clip_arrays(cfg: CLIPConfig, seed: int = 0) -> dict[str, np.ndarray]:
    a = init_vit_arrays(cfg.vision, seed, prefix="visual.")
    rng = np.random.default_rng([seed, 1])
    t, f = cfg.text, np.float32
    a["text.tok"] = (rng.standard_normal((t.vocab_size, t.dim)) * 0.02).astype(f)
    a["text.pos"] = (rng.standard_normal((t.context, t.dim)) * 0.01).astype(f)
    for i in range(t.depth):
        a.update(init_block(rng, f"text.blocks.{i}.", t.dim, t.mlp_dim, t.depth))
    a["text.norm.w"], a["text.norm.b"] = np.ones(t.dim, f), np.zeros(t.dim, f)
    a["visual_proj"] = (rng.standard_normal((cfg.embed_dim, cfg.vision.dim)) / math.sqrt(cfg.vision.dim)).astype(f)
    a["text_proj"] = (rng.standard_normal((cfg.embed_dim, t.dim)) / math.sqrt(t.dim)).astype(f)
    a["logit_scale"] = np.array([cfg.logit_scale_init], f)
    return a


def init_clip(cfg: CLIPConfig, seed: int = 0) -> dict[str, Tensor]:
    return to_tensors(init_clip_arrays(cfg, seed))


def encode_image(p: dict[str, Tensor], cfg: CLIPConfig, x: Tensor, dtype=dtypes.float32) -> Tensor:
    """Projected image features (B, embed_dim), not normalised."""
    return linear(vit_features(p, cfg.vision, x, prefix="visual.", dtype=dtype), p["visual_proj"]).float()


def encode_text(p: dict[str, Tensor], cfg: CLIPConfig, ids: Tensor, dtype=dtypes.float32) -> Tensor:
    """Projected text features (B, embed_dim) pooled at the first end-of-text token of each row."""
    t = cfg.text
    B, T = ids.shape
    if T > t.context:
        raise ValueError(f"token ids have length {T}, longer than the text context {t.context}")
    h = (p["text.tok"][ids] + p["text.pos"][:T]).cast(dtype)
    for i in range(t.depth):
        h = block(p, f"text.blocks.{i}.", h, t.heads, t.act, t.eps, causal=True)
    h = layer_norm(h, p["text.norm.w"], p["text.norm.b"], t.eps)
    is_eos = (ids == t.eos_id).float()
    first = is_eos * (is_eos.cumsum(1) == 1).float()           # one-hot of the first EOS
    pooled = (first.unsqueeze(-1).cast(h.dtype) * h).sum(1)
    return linear(pooled, p["text_proj"]).float()


def normalize(x: Tensor) -> Tensor:
    return x / (x * x).sum(-1, keepdim=True).add(1e-12).sqrt()


def clip_embed(p, cfg: CLIPConfig, images: Tensor, ids: Tensor, dtype=dtypes.float32) -> tuple[Tensor, Tensor]:
    return normalize(encode_image(p, cfg, images, dtype)), normalize(encode_text(p, cfg, ids, dtype))


def clip_logits(p, img: Tensor, txt: Tensor) -> Tensor:
    """(B, B) image-to-text logits: cosine similarity times the learned temperature (clamped at 100)."""
    return p["logit_scale"].exp().minimum(100.0).reshape(1, 1) * (img @ txt.T)


def clip_loss(p, img: Tensor, txt: Tensor) -> Tensor:
    """Symmetric InfoNCE: pair i is the right answer for row i and for column i."""
    logits = clip_logits(p, img, txt)
    target = Tensor.arange(logits.shape[0])
    return (logits.sparse_categorical_crossentropy(target) + logits.T.sparse_categorical_crossentropy(target)) / 2


def contrastive_loss(p: dict[str, Tensor], cfg: CLIPConfig, dtype=dtypes.float32):
    """(images, token ids) -> symmetric InfoNCE of the batch: what `clip_contrastive` trains and the bench times."""
    return lambda x, ids: clip_loss(p, *clip_embed(p, cfg, x, ids, dtype))


# ---- sizing without weights ----------------------------------------------------------------------------------
def clip_param_count(cfg: CLIPConfig) -> int:
    """Parameters of `init_clip_arrays(cfg)`, from the config alone (tests hold the two equal)."""
    t = cfg.text
    text = t.vocab_size * t.dim + t.context * t.dim + t.depth * block_param_count(t.dim, t.mlp_dim) + 2 * t.dim
    return vit_param_count(cfg.vision) + text + cfg.embed_dim * (cfg.vision.dim + t.dim) + 1


def clip_memory_plan(cfg: CLIPConfig, *, precision: str, micro_batch_size: int, grad_accum: int) -> dict:
    """Parameter count and a memory estimate per component for training every weight on batches of
    `micro_batch_size` image-caption pairs, from shapes alone (the layout of `llm_memory_plan`). Per pair: the
    image tower, the text tower over the full context, both projections; per batch: the B x B similarity logits
    and the softmax of each direction (fp32)."""
    c, t, B = PRECISION_BYTES[precision], cfg.text, micro_batch_size
    n = clip_param_count(cfg)
    text = 4 * t.context + c * t.context * t.dim + tower_activation_bytes(t.context, t.dim, t.mlp_dim, t.heads,
                                                                          t.depth, c)
    per_pair = vit_activation_bytes(cfg.vision, c) + text + 2 * (c * cfg.embed_dim + 2 * 4 * cfg.embed_dim)
    act = B * per_pair + 3 * 4 * B * B
    return {
        "config": cfg.to_dict(), "precision": precision, "micro_batch_size": B, "grad_accum": grad_accum,
        "pairs_per_step": B * grad_accum, "tokens_per_image": cfg.vision.seq_len, "text_context": t.context,
        "params": n, "params_image_tower": vit_param_count(cfg.vision), "trainable_params": n, "trainable_pct": 100.0,
        **training_memory(master_params=n, cast_params=n, trainable=n, precision=precision, activations=act),
        "note": "estimate from shapes; no weights loaded; activations are per micro-batch",
    }


# ---- tokenizer -----------------------------------------------------------------------------------------------
def train_caption_tokenizer(captions: list[str], vocab_size: int):
    """Byte-level BPE learned from the captions (deterministic for the same captions in the same order)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([c.lower() for c in captions], trainer)
    return tok


def load_tokenizer(data: bytes | str):
    return Tokenizer.from_str(data.decode() if isinstance(data, bytes) else data)


def encode_captions(tok, captions: list[str], context: int) -> np.ndarray:
    """(N, context) int32: BOS, tokens (truncated), EOS, then EOS padding (as HF CLIP pads)."""
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    out = np.full((len(captions), context), eos, np.int32)
    for i, c in enumerate(captions):
        ids = tok.encode(c.lower()).ids[:context - 2]
        out[i, :len(ids) + 2] = [bos, *ids, eos]
    return out
