"""LoRA for the Llama model: wrap projections, train only the adapters, merge them back.

`y = x W^T + (alpha/r) * dropout(x) A^T B^T` with A (r, in) Kaiming-uniform and B (out, r) zero, so the
wrapped model starts exactly equal to the base. The base `weight` tensor is the model's own (not a copy) and
is never passed to the optimizer, so it stays bit-identical. Adapter names follow PEFT
(`model.layers.0.self_attn.q_proj.lora_A.weight`), so adapters are recognisable outside Zeropoint too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tinygrad import Tensor, dtypes

from ..errors import ZeropointError
from .llama import Linear

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGETS = ATTN + MLP + ("lm_head",)


@dataclass
class LoRASpec:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self):
        if self.rank < 1:
            raise ZeropointError(f"lora.rank must be >= 1 (got {self.rank})")
        if not 0.0 <= self.dropout < 1.0:
            raise ZeropointError(f"lora.dropout must be in [0, 1) (got {self.dropout})")
        if bad := [t for t in self.targets if t not in TARGETS and t != "all_linear"]:
            raise ZeropointError(f"unknown lora.targets {bad}; choose from {', '.join(TARGETS)} or all_linear")
        if not self.targets:
            raise ZeropointError("lora.targets is empty; name at least one projection, e.g. [q_proj, v_proj]")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def expanded_targets(self) -> list[str]:
        return list(ATTN + MLP) if "all_linear" in self.targets else list(self.targets)


class LoRALinear:
    """Drop-in for a bias-free projection: `.weight` is the frozen base, `.lora_A`/`.lora_B` the adapters."""

    def __init__(self, weight: Tensor, rank: int, alpha: float, dropout: float, rng: np.random.Generator):
        out_f, in_f = weight.shape
        self.weight = weight
        bound = math.sqrt(6.0 / ((1 + 5.0) * in_f))           # kaiming_uniform(a=sqrt(5)), PEFT's default
        self.lora_A = Tensor(rng.uniform(-bound, bound, (rank, in_f)).astype(np.float32)).realize()
        self.lora_B = Tensor.zeros(out_f, rank, dtype=dtypes.float32).contiguous().realize()
        self.scale, self.dropout = alpha / rank, dropout

    def __call__(self, x: Tensor) -> Tensor:
        y = x @ self.weight.cast(x.dtype).T
        h = x.dropout(self.dropout) if self.dropout > 0 else x
        return y + (h @ self.lora_A.cast(x.dtype).T @ self.lora_B.cast(x.dtype).T) * self.scale

    def merged_weight(self) -> np.ndarray:
        """W + scale * B @ A, computed in float64 and rounded once to fp32."""
        w = self.weight.numpy().astype(np.float64)
        return (w + self.scale * (self.lora_B.numpy().astype(np.float64) @ self.lora_A.numpy().astype(np.float64))).astype(np.float32)


def _sites(model, targets: list[str]):
    """(hf prefix, owner object, attribute) of every projection named in targets."""
    for i, layer in enumerate(model.model.layers):
        for t in targets:
            if t in ATTN:
                yield f"model.layers.{i}.self_attn.{t}", layer.self_attn, t
            elif t in MLP:
                yield f"model.layers.{i}.mlp.{t}", layer.mlp, t
    if "lm_head" in targets:
        if getattr(model.cfg, "tie_embeddings", False):
            raise ZeropointError("lora target lm_head is tied to the embedding in this model; drop it from lora.targets")
        yield "lm_head", model, "lm_head"


def apply_lora(model, spec: LoRASpec, seed: int = 0) -> dict[str, Tensor]:
    """Wrap the target projections in place; return the adapter tensors (the only trainable ones) by PEFT name."""
    rng = np.random.default_rng([seed, 0x10A])
    adapters: dict[str, Tensor] = {}
    for prefix, owner, attr in _sites(model, spec.expanded_targets()):
        base = getattr(owner, attr)
        if isinstance(base, LoRALinear):
            raise ZeropointError(f"{prefix} already has a LoRA adapter; merge or reload the model first")
        w = LoRALinear(base.weight, spec.rank, spec.alpha, spec.dropout, rng)
        setattr(owner, attr, w)
        adapters[f"{prefix}.lora_A.weight"] = w.lora_A
        adapters[f"{prefix}.lora_B.weight"] = w.lora_B
    if not adapters:
        raise ZeropointError(f"lora.targets {spec.targets} matched no projection in this model")
    return adapters


def lora_modules(model) -> dict[str, LoRALinear]:
    out = {}
    for prefix, owner, attr in _sites(model, list(ATTN + MLP) + ([] if getattr(model.cfg, "tie_embeddings", False) else ["lm_head"])):
        m = getattr(owner, attr, None)
        if isinstance(m, LoRALinear):
            out[prefix] = m
    return out


def adapter_tensors(model) -> dict[str, Tensor]:
    out = {}
    for prefix, m in lora_modules(model).items():
        out[f"{prefix}.lora_A.weight"] = m.lora_A
        out[f"{prefix}.lora_B.weight"] = m.lora_B
    return out


def load_adapters(model, arrays: dict[str, np.ndarray]) -> None:
    """Copy saved adapter arrays into a model already wrapped with the same spec (names and shapes checked)."""
    have = adapter_tensors(model)
    missing, extra = sorted(set(have) - set(arrays)), sorted(set(arrays) - set(have))
    if missing or extra:
        raise ZeropointError(f"adapter does not match the LoRA targets: missing {missing[:3]}, unexpected {extra[:3]}; "
                             "use the same lora.targets and model config the adapter was trained with")
    for k, t in have.items():
        if tuple(arrays[k].shape) != tuple(t.shape):
            raise ZeropointError(f"adapter {k} has shape {arrays[k].shape}, expected {t.shape} (different lora.rank?)")
        t.assign(Tensor(np.ascontiguousarray(arrays[k], dtype=np.float32), device=t.device)).realize()


def merge_lora(model) -> int:
    """Fold every adapter into its base weight and unwrap it back to a plain projection. Returns how many."""
    n = 0
    for prefix, owner, attr in _sites(model, list(ATTN + MLP) + ([] if getattr(model.cfg, "tie_embeddings", False) else ["lm_head"])):
        m = getattr(owner, attr, None)
        if not isinstance(m, LoRALinear):
            continue
        lin = Linear.__new__(Linear)
        lin.weight = Tensor(m.merged_weight()).realize()
        setattr(owner, attr, lin)
        n += 1
    return n


def count_lora_params(cfg, spec: LoRASpec) -> int:
    """Trainable parameters of the adapters for a Llama config, from shapes alone (no weights)."""
    d, hd = cfg.dim, cfg.head_dim
    shapes = {"q_proj": (d, cfg.n_heads * hd), "k_proj": (d, cfg.n_kv_heads * hd), "v_proj": (d, cfg.n_kv_heads * hd),
              "o_proj": (cfg.n_heads * hd, d), "gate_proj": (d, cfg.hidden_dim), "up_proj": (d, cfg.hidden_dim),
              "down_proj": (cfg.hidden_dim, d)}
    per_layer = sum(spec.rank * (i + o) for t, (i, o) in shapes.items() if t in spec.expanded_targets())
    head = spec.rank * (d + cfg.vocab_size) if "lm_head" in spec.targets else 0
    return cfg.n_layers * per_layer + head
