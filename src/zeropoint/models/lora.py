"""LoRA for the Llama model: wrap projections, train only the adapters, merge them back.

`y = x W^T + (alpha/r) * dropout(x) A^T B^T` with A (r, in) Kaiming-uniform and B (out, r) zero, so the
wrapped model starts exactly equal to the base. The base `weight` tensor is the model's own (not a copy) and
is never passed to the optimizer, so it stays bit-identical. Adapter names follow PEFT
(`model.layers.0.self_attn.q_proj.lora_A.weight`), so adapters are recognisable outside Zeropoint too.

`freeze_base` stores the frozen base without an fp32 master: in the compute dtype (bf16/fp16: 2 bytes a
weight), or the transformer projections in NF4/int8 (QLoRA, `basequant.py`). Adapters stay fp32 masters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tinygrad import Tensor, dtypes, nn

from ..errors import ZeropointError
from .basequant import BASE_QUANTS, bf16_tensor, f32_to_bf16_bits, quantize_weight, weight_numpy_f32
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
    base_quant: str = "none"          # how freeze_base stores the frozen projections: none | nf4 | int8

    def __post_init__(self):
        if self.base_quant not in BASE_QUANTS:
            raise ZeropointError(f"lora.base_quant {self.base_quant!r} is not supported; use one of {', '.join(BASE_QUANTS)}")
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

    @classmethod
    def from_section(cls, section: dict | None) -> LoRASpec:
        """The spec of an llm_finetune config's `lora` section (typed, or as stored in a run or checkpoint).
        `init_from` (the PEFT adapter dir training started from) says where the adapters began, not their shape."""
        return cls(**{k: v for k, v in (section or {}).items() if k != "init_from"})


class LoRALinear:
    """Drop-in for a bias-free projection: `.weight` is the frozen base, `.lora_A`/`.lora_B` the adapters."""

    def __init__(self, weight: Tensor, rank: int, alpha: float, dropout: float, rng: np.random.Generator):
        out_f, in_f = weight.shape
        self.weight = weight
        bound = math.sqrt(6.0 / ((1 + 5.0) * in_f))           # kaiming_uniform(a=sqrt(5)), PEFT's default
        # made lazily and realized together by apply_lora: one schedule for every adapter, not two each
        self.lora_A = Tensor(rng.uniform(-bound, bound, (rank, in_f)).astype(np.float32))
        self.lora_B = Tensor(np.zeros((out_f, rank), dtype=np.float32))
        self.scale, self.dropout = alpha / rank, dropout

    def __call__(self, x: Tensor) -> Tensor:
        y = x @ self.weight.cast(x.dtype).T
        h = x.dropout(self.dropout) if self.dropout > 0 else x
        return y + (h @ self.lora_A.cast(x.dtype).T @ self.lora_B.cast(x.dtype).T) * self.scale

    def merged_weight(self) -> Tensor:
        """W + scale * B @ A in the base's storage dtype. fp32 base: computed in float64, rounded once to fp32.
        bf16/fp16 base: exact fp32 arithmetic on the base's values, rounded once to the base dtype. A quantised
        base (NF4/int8) merges into its dequantised fp32 values, the function the adapters were trained on."""
        w = weight_numpy_f32(self.weight)
        a, b = self.lora_A.numpy(), self.lora_B.numpy()
        if isinstance(self.weight, Tensor) and self.weight.dtype == dtypes.bfloat16:
            merged = w + np.float32(self.scale) * (b @ a)
            return bf16_tensor(f32_to_bf16_bits(merged), self.weight.device)
        if isinstance(self.weight, Tensor) and self.weight.dtype == dtypes.float16:
            return Tensor((w + np.float32(self.scale) * (b @ a)).astype(np.float16)).realize()
        merged = w.astype(np.float64) + self.scale * (b.astype(np.float64) @ a.astype(np.float64))
        return Tensor(merged.astype(np.float32)).realize()


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
    Tensor.realize(*adapters.values())
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
        t.assign(Tensor(np.ascontiguousarray(arrays[k], dtype=np.float32))).realize()


def merge_lora(model) -> int:
    """Fold every adapter into its base weight and unwrap it back to a plain projection. Returns how many.
    Projections left quantised (NF4/int8, no adapter) are dequantised to fp32 too: a merged model is plain."""
    n = 0
    for prefix, owner, attr in _sites(model, list(ATTN + MLP) + ([] if getattr(model.cfg, "tie_embeddings", False) else ["lm_head"])):
        m = getattr(owner, attr, None)
        if isinstance(m, LoRALinear):
            lin = Linear.__new__(Linear)
            lin.weight = m.merged_weight()
            setattr(owner, attr, lin)
            n += 1
        elif m is not None and not isinstance(m.weight, Tensor):
            m.weight = Tensor(weight_numpy_f32(m.weight)).realize()
    return n


def freeze_base(model, dtype, base_quant: str = "none") -> dict:
    """Store every frozen weight of a LoRA-wrapped model without an fp32 master.

    The seven transformer projections of every layer go to NF4/int8 when `base_quant` says so, else to `dtype`;
    embeddings, norms and an untied lm_head go to `dtype` (QLoRA keeps those in 16 bits too). Adapters are
    untouched. With dtype fp32 and no quantisation nothing changes. On the CPU device call it inside
    `engine.precision_context("bf16")` for bf16. Returns {"frozen_bytes", "quantised"} for the run's evidence."""
    if base_quant not in BASE_QUANTS:
        raise ZeropointError(f"lora.base_quant {base_quant!r} is not supported; use one of {', '.join(BASE_QUANTS)}")
    if not lora_modules(model):
        raise ZeropointError("freeze_base needs a LoRA-wrapped model (apply_lora first): full finetuning trains every weight")
    adapters = {id(t) for t in adapter_tensors(model).values()}
    quantised = 0
    if base_quant != "none":
        for _, owner, attr in _sites(model, list(ATTN + MLP)):
            lin = getattr(owner, attr)
            lin.weight = quantize_weight(weight_numpy_f32(lin.weight), base_quant, lin.weight.device)
            quantised += 1
    # the quantised weights' own scales stay fp32; everything else frozen goes to the compute dtype
    keep = adapters | {id(v) for _, owner, attr in _sites(model, list(ATTN + MLP))
                       if not isinstance(w := getattr(owner, attr).weight, Tensor)
                       for v in vars(w).values() if isinstance(v, Tensor)}
    frozen = []
    for t in nn.state.get_state_dict(model).values():   # embeddings, norms, unquantised projections, lm_head
        if id(t) in keep or not dtypes.is_float(t.dtype) or t.dtype == dtype:
            continue
        t.replace(t.cast(dtype).contiguous())
        frozen.append(t)
    if frozen:
        Tensor.realize(*frozen)
    nbytes = sum(t.nbytes() for t in nn.state.get_state_dict(model).values() if id(t) not in adapters)
    return {"frozen_bytes": int(nbytes), "quantised_projections": quantised, "base_quant": base_quant,
            "frozen_dtype": str(dtype)}


def count_lora_params(cfg, spec: LoRASpec) -> int:
    """Trainable parameters of the adapters for a Llama config, from shapes alone (no weights)."""
    d, hd = cfg.dim, cfg.head_dim
    shapes = {"q_proj": (d, cfg.n_heads * hd), "k_proj": (d, cfg.n_kv_heads * hd), "v_proj": (d, cfg.n_kv_heads * hd),
              "o_proj": (cfg.n_heads * hd, d), "gate_proj": (d, cfg.hidden_dim), "up_proj": (d, cfg.hidden_dim),
              "down_proj": (cfg.hidden_dim, d)}
    per_layer = sum(spec.rank * (i + o) for t, (i, o) in shapes.items() if t in spec.expanded_targets())
    head = spec.rank * (d + cfg.vocab_size) if "lm_head" in spec.targets else 0
    return cfg.n_layers * per_layer + head
