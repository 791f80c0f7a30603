"""Build, load and open every language-model reference, in one place: the face of `models/` for LLMs.

    lm = open_lm(ref)                 # named model | .gguf | HF dir | finetune checkpoint (verified, LoRA merged)
    lm.model, lm.config, lm.tokenizer, lm.info
    lm = build_llm(spec, precision="fp32", seed=0)          # a recipe's `model:` section (LLMSpec)
    params = trainable_params(lm.model, "lora", LoRASpec(base_quant="nf4"), seed=0, precision="bf16")
    loss = lm_loss(lm.model, activation_checkpointing="layers")      # an engine.SegmentedLoss
    plan = llm_memory_plan(spec, method="lora", lora=LoRASpec(), precision="fp32", micro_batch_size=4,
                           seq_len=128, grad_accum=1, activation_checkpointing="none")

Recipes, evals, export, release, perf, safety and the CLI call these; nothing here knows a recipe. A finetune
checkpoint (manifest.json beside the recipe's config.json) is opened from the `model`, `method`, `lora` and
`train.seed` keys of its stored config: the base is rebuilt (random init from the seed, or the named weights),
the trained tensors are loaded after the checkpoint verifies file by file.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field
from tinygrad import Tensor

from ..checkpoint import Checkpoint, load_checkpoint
from ..config import StrictModel, validate
from ..engine import SegmentedLoss, compute_dtype, precision_context
from ..errors import ConfigError, ZeropointError
from .basequant import bits_per_weight
from .hf import save_hf_dir
from .llama import (
    PUBLISHED_PARAMS,
    Llama,
    LlamaConfig,
    bound_tensors,
    cache_key,
    get_config,
    param_count,
    projection_shapes,
    state_dict,
)
from .lora import LoRASpec, apply_lora, count_lora_params, freeze_base, load_adapters, lora_modules, merge_lora
from .memory import PRECISION_BYTES, adamw_step_bytes, training_memory
from .registry import load_model, load_tokenizer, parse_dtype

CHECKPOINTING = ("none", "layers", "every_k")


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


def trainable_params(model: Llama, method: str, lora: LoRASpec | None = None, seed: int = 0,
                     precision: str = "fp32") -> dict[str, Tensor]:
    """LoRA: wrap the target projections and return the adapters (fp32 masters). The frozen base keeps no fp32
    master: it is stored in the compute dtype of `precision`, or its projections in NF4/int8 (`lora.base_quant`);
    what was stored is recorded in `model.freeze_info`. Full: every weight (fp32 masters)."""
    lora = lora or LoRASpec()
    if method == "lora":
        adapters = apply_lora(model, lora, seed=seed)
        with precision_context(precision):
            model.freeze_info = freeze_base(model, compute_dtype(precision), lora.base_quant)
        return adapters
    if lora.base_quant != "none":
        raise ConfigError(f"lora.base_quant {lora.base_quant} quantises a frozen base; method full trains every "
                          "weight. Use method: lora, or lora.base_quant: none")
    return dict(state_dict(model))


def lm_loss(model: Llama, activation_checkpointing: str = "none", k: int = 2):
    """Mean next-token cross-entropy over labelled positions (label -1 = prompt/padding, ignored).

    With `activation_checkpointing` ("layers": every decoder layer; "every_k": k layers together) the loss is an
    `engine.SegmentedLoss`, which the engine recomputes segment by segment in the backward pass."""
    def head(h, x, y):
        # tinygrad 0.14 treats ignore_index=-1 as "ignore nothing": the mean would divide by every position, so a
        # padded or prompt-masked batch read low. Label -1 one-hots to zeros, so the sum is right; divide it by the
        # labelled count (at least 1: an all-padding batch has loss 0, not NaN).
        labelled = (y != -1).sum().maximum(1)
        return model.logits_from_hidden(h).sparse_categorical_crossentropy(y, reduction="sum") / labelled
    if activation_checkpointing not in CHECKPOINTING:
        raise ConfigError(f"train.activation_checkpointing {activation_checkpointing!r}: use one of "
                          f"{', '.join(CHECKPOINTING)}")
    if activation_checkpointing == "none":
        return lambda x, y: head(model.hidden(x), x, y)
    if any(m.dropout > 0 for m in lora_modules(model).values()):
        raise ConfigError(DROPOUT_WITH_CHECKPOINTING)
    return SegmentedLoss(model.hidden_segments(1 if activation_checkpointing == "layers" else k) + [head])


DROPOUT_WITH_CHECKPOINTING = ("activation checkpointing recomputes each block in backward, where LoRA dropout "
                              "would draw a different mask; set lora.dropout: 0 or train.activation_checkpointing: none")


def warm_start_args(model: Llama, params: dict[str, Tensor], *, method: str, lora: LoRASpec | None,
                    activation_checkpointing: str = "none", activation_checkpointing_k: int = 2) -> dict:
    """`Trainer` kwargs that let its compiled steps be stored and reused by the next process (engine/jitcache.py):
    every other tensor the loss reads (bound by name on load), and what the loss computes (the cache key).

    The key names everything that changes the step besides shapes: the model config and compute dtype, the
    method, the LoRA spec (its base_quant: an NF4/int8 base is another step), and activation checkpointing
    (another chain of realizes). The engine adds precision and the loss; the bound tensors' dtypes (a frozen
    bf16 base, NF4 codes) are checked by jitcache itself."""
    trainable = {id(t) for t in params.values()}
    frozen = {k: t for k, t in bound_tensors(model).items() if id(t) not in trainable}
    key = {"recipe": "llm_finetune", **cache_key(model), "method": method,
           "lora": asdict(lora or LoRASpec()) if method == "lora" else None,
           "base_quant": (lora or LoRASpec()).base_quant if method == "lora" else "none",
           "activation_checkpointing": activation_checkpointing,
           "activation_checkpointing_k": activation_checkpointing_k if activation_checkpointing == "every_k" else None}
    return {"frozen": frozen, "cache_key": key}


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
    lora = LoRASpec.from_section(raw.get("lora"))
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
    save_hf_dir(lm.model, lm.config, lm.tokenizer, out)   # the byte tokenizer too: it has a tokenizer.json form
    return {"checkpoint": str(checkpoint), "out": str(out), "method": lm.info["method"], "merged_modules": merged,
            "adapted_modules": n_adapted, "config": lm.info["config"]}


# ---- sizing without weights --------------------------------------------------------------------------------------
def llm_memory_plan(spec: LLMSpec, *, method: str, lora: LoRASpec, precision: str, micro_batch_size: int,
                    seq_len: int, grad_accum: int, activation_checkpointing: str = "none",
                    activation_checkpointing_k: int = 2) -> dict:
    """Parameter counts and the memory plan of one training step, from shapes alone (no weights are loaded).

    The plan is what tinygrad's allocator holds at its high-water mark (method and its check against the
    measurement: docs/memory.md):
    weights: trainable fp32 masters; a LoRA base frozen in the compute dtype (no fp32 master), or its projections
    in NF4/int8 (`lora.base_quant`) with embeddings, norms and lm_head in the compute dtype; full finetuning keeps
    fp32 masters plus, for fp16/bf16, the compute-dtype copy the matmuls read.
    grads: fp32 accumulation buffers of the trainable parameters. optimizer: AdamW m and v, fp32.
    activations: what the backward pass keeps for one micro-batch (`activation_bytes`); with activation
    checkpointing, the saved segment inputs plus one recomputed segment. optimizer_step: the jitted AdamW step's
    own buffers (`memory.adamw_step_bytes`: new moments, zeroed gradients, one new weight), held beside the
    micro-step's activations. other: RoPE tables and the batch."""
    mc = arch_config(spec)
    n = param_count(mc)
    n_lora = count_lora_params(mc, lora) if method == "lora" else 0
    trainable = n_lora if method == "lora" else n
    c = PRECISION_BYTES[precision]
    B, T = micro_batch_size, seq_len
    quant = lora.base_quant if method == "lora" else "none"
    if method == "lora":   # the frozen base keeps no fp32 master: compute dtype, or NF4/int8 projections
        shapes = projection_shapes(mc)
        n_proj = mc.n_layers * sum(o * i for o, i in shapes.values())
        proj_bytes = (mc.n_layers * sum(math.ceil(bits_per_weight(quant, s) * s[0] * s[1] / 8) for s in shapes.values())
                      if quant != "none" else c * n_proj)
        frozen = proj_bytes + c * (n - n_proj)
        masters, cast = n_lora, 0
    else:
        frozen, masters, cast = None, n, n
    act, act_detail = activation_bytes(mc, precision=precision, micro_batch_size=B, seq_len=T,
                                       checkpointing=activation_checkpointing, k=activation_checkpointing_k)
    other = 2 * 4 * mc.max_seq_len * mc.head_dim + 2 * 2 * 4 * B * T     # cos/sin tables; x, y and their JIT copies
    step = adamw_step_bytes(trainable=trainable, largest=largest_trainable_tensor(mc, method, lora))
    plan = training_memory(master_params=masters, cast_params=cast, trainable=trainable, precision=precision,
                           activations=act, frozen_bytes=frozen or 0, other=other, optimizer_step=step["bytes"])
    pub = PUBLISHED_PARAMS.get(spec.config)
    return {
        "config": spec.config, "method": method, "precision": precision,
        "micro_batch_size": B, "seq_len": T, "grad_accum": grad_accum,
        "base_quant": quant, "activation_checkpointing": activation_checkpointing,
        "activation_checkpointing_k": activation_checkpointing_k if activation_checkpointing == "every_k" else None,
        "architecture": {k: getattr(mc, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim",
                                                      "vocab_size", "tie_embeddings", "rope_theta")},
        "params": n, "published_params": pub,
        "params_vs_published_pct": round(100.0 * (n - pub) / pub, 4) if pub else None,
        "lora_params": n_lora if method == "lora" else None,
        "trainable_params": trainable, "trainable_pct": round(100.0 * trainable / n, 4),
        "frozen_base_bytes": frozen,
        **plan,
        "activations_detail": act_detail,
        "optimizer_step_detail": step["detail"],
        "lora": asdict(lora) if method == "lora" else None,
        "note": "plan from shapes; no weights loaded; checked against tinygrad's allocator high-water mark in "
                "docs/memory.md",
    }


def largest_trainable_tensor(mc: LlamaConfig, method: str, lora: LoRASpec) -> int:
    """Elements of the largest trainable tensor: a whole weight (full finetuning: usually the embedding or the
    LM head), or one LoRA factor (rank x the wider side of its projection)."""
    if method != "lora":
        return max(mc.vocab_size * mc.dim, *(o * i for o, i in projection_shapes(mc).values()))
    shapes = projection_shapes(mc)
    sides = [max(shapes[t]) for t in lora.expanded_targets() if t in shapes]
    if "lm_head" in lora.targets:
        sides.append(max(mc.dim, mc.vocab_size))
    return lora.rank * max(sides, default=0)


def activation_bytes(mc: LlamaConfig, *, precision: str, micro_batch_size: int, seq_len: int,
                     checkpointing: str = "none", k: int = 2) -> tuple[int, dict]:
    """Bytes the backward pass keeps for one micro-batch of B x T tokens at its peak.

    Per decoder layer: the fp32 residual stream at the layer's input and middle (RMSNorm's backward reads
    them), the two normed inputs, q/k/v, the attention output and the MLP's gate, up and gated product in the
    compute dtype, and the attention probabilities (materialised, compute dtype) beside their fp32 scores.
    Head: the fp32 logits and their softmax. With checkpointing (k layers a segment): the fp32 input of every
    segment, the gradient flowing between segments (in and out), and one segment's layers recomputed; the last
    segment is recomputed together with the head."""
    c = PRECISION_BYTES[precision]
    B, T = micro_batch_size, seq_len
    hd, kv = mc.head_dim, mc.n_kv_heads * mc.head_dim
    per_token = 4 * 2 * mc.dim + c * (2 * mc.dim + mc.n_heads * hd + 2 * kv + mc.n_heads * hd + 3 * mc.hidden_dim)
    layer = B * T * per_token + B * mc.n_heads * T * T * (4 + c)
    head = 2 * 4 * B * T * mc.vocab_size
    stream = 4 * B * T * mc.dim
    if checkpointing not in CHECKPOINTING:
        raise ConfigError(f"train.activation_checkpointing {checkpointing!r}: use one of {', '.join(CHECKPOINTING)}")
    if checkpointing == "none":
        return mc.n_layers * layer + head, {"layer_bytes": layer, "head_bytes": head, "layers_kept": mc.n_layers}
    k = 1 if checkpointing == "layers" else min(k, mc.n_layers)
    segments = math.ceil(mc.n_layers / k)
    saved = segments * stream                  # the embedding output and the input of every later segment
    return saved + 2 * stream + k * layer + head, {"layer_bytes": layer, "head_bytes": head, "layers_kept": k,
                                                    "segments": segments, "saved_inputs_bytes": saved}
