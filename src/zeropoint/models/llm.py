"""Build, load and open every language-model reference, in one place: the face of `models/` for LLMs.

    lm = open_lm(ref)                 # named model | .gguf | HF dir | finetune checkpoint (verified, LoRA merged)
    lm.model, lm.config, lm.tokenizer, lm.info
    lm = build_llm(spec, precision="fp32", seed=0)          # a recipe's `model:` section (LLMSpec)
    params = trainable_params(lm.model, "lora", LoRASpec(), seed=0)
    plan = llm_memory_plan(spec, method="lora", lora=LoRASpec(), precision="fp32", micro_batch_size=4,
                           seq_len=128, grad_accum=1)

Recipes, evals, export, release, perf, safety and the CLI call these; nothing here knows a recipe. A finetune
checkpoint (manifest.json beside the recipe's config.json) is opened from the `model`, `method`, `lora` and
`train.seed` keys of its stored config: the base is rebuilt (random init from the seed, or the named weights),
the trained tensors are loaded after the checkpoint verifies file by file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field
from tinygrad import Tensor

from ..checkpoint import Checkpoint, load_checkpoint
from ..config import StrictModel, validate
from ..errors import ConfigError, ZeropointError
from .hf import save_hf_dir
from .llama import PUBLISHED_PARAMS, Llama, LlamaConfig, get_config, param_count, state_dict
from .lora import LoRASpec, apply_lora, count_lora_params, load_adapters, lora_modules, merge_lora
from .registry import load_model, load_tokenizer, parse_dtype
from .tokenizer import Tokenizer

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


class LLMSpec(StrictModel):
    """A recipe's `model:` section: which architecture, and where its weights and tokenizer come from."""
    config: str = Field(description="named architecture in models.llama.CONFIGS, e.g. smollm2-135m, tiny")
    weights: str | None = Field(None, description="named model | .gguf | HF dir | null (random init from seed)")
    tokenizer: str | None = Field(None, description="tokenizer source; default: the weights, else smollm2-135m")
    overrides: dict = Field(default_factory=dict, description="LlamaConfig fields to change (random init only)")


@dataclass
class LoadedLM:
    """What opening a model reference gives: the model, its architecture, its tokenizer, and what was opened
    (`info["kind"]`: checkpoint | gguf | hf | random; checkpoints add `base`, `method`, `recipe_config`)."""
    model: Llama
    config: LlamaConfig
    tokenizer: object
    info: dict = field(default_factory=dict)


def arch_config(spec: LLMSpec) -> LlamaConfig:
    """The named architecture with the spec's overrides applied (no weights)."""
    try:
        return get_config(spec.config, **spec.overrides)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"model.config {spec.config!r} / overrides {spec.overrides}: {e}") from None


def build_llm(spec: LLMSpec, *, precision: str = "fp32", seed: int = 0) -> LoadedLM:
    """The base model of a spec: its weights (fp32 masters) or a random init from `seed`; compute dtype from
    `precision`."""
    cd = parse_dtype(precision)
    if spec.weights:
        model, mc, tok = load_model(spec.weights, compute_dtype=cd)
        want = arch_config(spec)
        if (mc.dim, mc.n_layers, mc.vocab_size) != (want.dim, want.n_layers, want.vocab_size):
            raise ConfigError(f"model.weights {spec.weights} is dim={mc.dim} layers={mc.n_layers} "
                              f"vocab={mc.vocab_size}, but model.config {spec.config} says dim={want.dim} "
                              f"layers={want.n_layers} vocab={want.vocab_size}; make them agree")
        if spec.tokenizer:
            tok = load_tokenizer(spec.tokenizer)
        return LoadedLM(model, mc, tok, dict(model.load_info, kind=model.load_info["format"]))
    mc = arch_config(spec)
    Tensor.manual_seed(seed)
    model = Llama(mc, compute_dtype=cd)
    Tensor.realize(*state_dict(model).values())
    tok = load_tokenizer(spec.tokenizer or "smollm2-135m")
    if tok.vocab_size > mc.vocab_size:
        raise ConfigError(f"tokenizer has {tok.vocab_size} tokens but the model vocab is {mc.vocab_size}; "
                          "set model.overrides.vocab_size or use a matching tokenizer")
    return LoadedLM(model, mc, tok, {"kind": "random", "config": spec.config, "seed": seed})


def trainable_params(model: Llama, method: str, lora: LoRASpec | None = None, seed: int = 0) -> dict[str, Tensor]:
    """LoRA: wrap the target projections and return the adapters (base frozen). Full: every weight."""
    if method == "lora":
        return apply_lora(model, lora or LoRASpec(), seed=seed)
    return dict(state_dict(model))


def lm_loss(model: Llama):
    """Mean next-token cross-entropy over labelled positions (label -1 = prompt/padding, ignored)."""
    def loss(x, y):
        return model(x).sparse_categorical_crossentropy(y, ignore_index=-1)
    return loss


def adapter_config(spec: LLMSpec, lora: LoRASpec) -> dict:
    """PEFT-style adapter_config.json, so an adapter says what it applies to."""
    return {"peft_type": "LORA", "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": lora.targets, "base_model_name_or_path": spec.weights or spec.config, "bias": "none"}


def load_trained_weights(model: Llama, params: dict[str, Tensor], ck: Checkpoint, method: str) -> None:
    """Copy a checkpoint's trained tensors (adapters, or every weight) into the live model."""
    if method == "lora":
        if ck.weights_kind != "adapter":
            raise ZeropointError(f"{ck.path} holds full model weights but the config trains LoRA")
        load_adapters(model, ck.weights)
        return
    missing = sorted(set(params) - set(ck.weights))
    if missing:
        raise ZeropointError(f"{ck.path}: model.safetensors lacks {missing[:3]}; it is not this model's checkpoint")
    for k, p in params.items():
        # device=p.device: a weight replicated across devices (data parallel) gets the array on every device
        p.assign(Tensor(np.ascontiguousarray(ck.weights[k], dtype=np.float32), device=p.device)).realize()


# ---- opening a reference ---------------------------------------------------------------------------------------
def is_finetune_checkpoint(ref: str | Path) -> bool:
    p = Path(ref)
    return p.is_dir() and (p / "manifest.json").is_file() and (p / "config.json").is_file() \
        and not (p / "tokenizer.json").exists()


def checkpoint_model_spec(raw: dict, source: str) -> tuple[LLMSpec, str, LoRASpec, int]:
    """(model spec, method, LoRA spec, seed) from an llm_finetune config as stored in a checkpoint or run."""
    if raw.get("recipe") != "llm_finetune":
        raise ConfigError(f"{source} is a {raw.get('recipe')!r} config; only llm_finetune checkpoints hold a "
                          "language model")
    spec = validate(LLMSpec, raw.get("model") or {}, f"{source} (model)")
    method = raw.get("method", "lora")
    if method not in ("lora", "full"):
        raise ConfigError(f"{source}: method {method!r} is not lora or full")
    lora = LoRASpec(**(raw.get("lora") or {}))
    return spec, method, lora, int((raw.get("train") or {}).get("seed", 0))


def open_checkpoint(path: str | Path, *, merge: bool = True) -> LoadedLM:
    """A trained model from a checkpoint dir: verified, base rebuilt from its config, adapters applied (and
    merged when `merge`)."""
    ck = load_checkpoint(path)
    spec, method, lora, seed = checkpoint_model_spec(ck.config, f"{path}/config.json")
    lm = build_llm(spec, precision="fp32", seed=seed)
    params = trainable_params(lm.model, method, lora, seed)
    load_trained_weights(lm.model, params, ck, method)
    if method == "lora" and merge:
        merge_lora(lm.model)
    lm.info = {"kind": "checkpoint", "path": str(Path(path).resolve()), "base": spec.weights, "method": method,
               "config": spec.config, "recipe_config": ck.config}
    return lm


def open_lm(ref: str | Path, *, compute_dtype: str = "float32") -> LoadedLM:
    """Any language-model reference the CLI, evals, red-team, export and release accept: a finetune checkpoint
    (verified, LoRA merged), a named model, a .gguf file or an HF directory."""
    if is_finetune_checkpoint(ref):
        lm = open_checkpoint(ref, merge=True)
        lm.model.compute_dtype = parse_dtype(compute_dtype)
        return lm
    model, cfg, tok = load_model(str(ref), compute_dtype=compute_dtype)
    return LoadedLM(model, cfg, tok, {"kind": (model.load_info or {}).get("format"), "path": str(ref),
                                      "name": (model.load_info or {}).get("name")})


def merge_checkpoint_to_hf(checkpoint: str | Path, out: str | Path) -> dict:
    """Verified checkpoint -> adapters merged into the base -> HF directory (config.json + safetensors)."""
    out = Path(out)
    lm = open_checkpoint(checkpoint, merge=False)
    n_adapted = len(lora_modules(lm.model))
    merged = merge_lora(lm.model)
    if lm.info["method"] == "lora" and merged == 0:
        raise ZeropointError(f"{checkpoint} has no LoRA adapters to merge")
    # the byte tokenizer of tiny configs has no tokenizer.json form; the directory then holds weights only
    save_hf_dir(lm.model, lm.config, lm.tokenizer if isinstance(lm.tokenizer, Tokenizer) else None, out)
    return {"checkpoint": str(checkpoint), "out": str(out), "method": lm.info["method"], "merged_modules": merged,
            "adapted_modules": n_adapted, "config": lm.info["config"]}


# ---- sizing without weights --------------------------------------------------------------------------------------
def llm_memory_plan(spec: LLMSpec, *, method: str, lora: LoRASpec, precision: str, micro_batch_size: int,
                    seq_len: int, grad_accum: int) -> dict:
    """Parameter counts and a memory estimate per component, from shapes alone (no weights are loaded).

    weights: fp32 master copy of every parameter (what the engine keeps) plus, for fp16/bf16, one compute-dtype
    copy of the frozen base (LoRA) or all weights (full) as cast for the matmuls.
    grads: fp32 accumulation buffers for the trainable parameters. optimizer: AdamW m and v, fp32.
    activations: what backward keeps per micro-batch: per layer the residual input and norms (fp32), the
    q/k/v/attention/MLP intermediates (compute dtype), the attention scores and probabilities (fp32,
    B*H*T*T each), then the fp32 logits and their softmax (B*T*V each)."""
    mc = arch_config(spec)
    n = param_count(mc)
    n_lora = count_lora_params(mc, lora) if method == "lora" else 0
    trainable = n_lora if method == "lora" else n
    c = PRECISION_BYTES[precision]
    B, T = micro_batch_size, seq_len
    kv = mc.n_kv_heads * mc.head_dim
    per_tok_layer = 4 * mc.dim * 2 + c * (2 * mc.dim + mc.n_heads * mc.head_dim + 2 * kv + mc.dim + 4 * mc.hidden_dim)
    attn = 2 * 4 * mc.n_heads * T * T * B + c * mc.n_heads * T * T * B
    act = mc.n_layers * (per_tok_layer * B * T + attn) + 2 * 4 * B * T * mc.vocab_size
    weights = 4 * (n + n_lora) + (c * n if c != 4 else 0)
    mem = {"weights_bytes": weights, "grads_bytes": 4 * trainable, "optimizer_bytes": 8 * trainable,
           "activations_bytes": act}
    mem["total_bytes"] = sum(mem.values())
    pub = PUBLISHED_PARAMS.get(spec.config)
    return {
        "config": spec.config, "method": method, "precision": precision,
        "micro_batch_size": B, "seq_len": T, "grad_accum": grad_accum,
        "architecture": {k: getattr(mc, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim",
                                                      "vocab_size", "tie_embeddings", "rope_theta")},
        "params": n, "published_params": pub,
        "params_vs_published_pct": round(100.0 * (n - pub) / pub, 4) if pub else None,
        "lora_params": n_lora if method == "lora" else None,
        "trainable_params": trainable, "trainable_pct": round(100.0 * trainable / n, 4),
        "memory": mem, "memory_gib": {k.replace("_bytes", ""): round(v / 2 ** 30, 3) for k, v in mem.items()},
        "lora": asdict(lora) if method == "lora" else None,
        "note": "estimate from shapes; no weights loaded",
    }
