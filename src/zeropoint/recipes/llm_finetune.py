"""Recipe `llm_finetune`: finetune a Llama-family model (LoRA or full) on an approved text corpus.

Read top to bottom, like a torchtune recipe:
  1. refuse simulated compute, ask governance for the approved datasets (before any data is read)
  2. open the run (evidence) and seed everything
  3. build the model: named config, base weights (named model | .gguf | HF dir | none = random init)
  4. LoRA: wrap target projections, train only the adapters; full: train every weight
  5. tokenise the corpus, split by document, pack to seq_len
  6. the engine: AdamW on fp32 masters, precision, accumulation, clipping, warm-up + cosine
  7. resume: load the newest valid checkpoint (verified) and continue at its step
  8. validation loss/perplexity of the starting model, train with eval + checkpoint cadence, final eval
  9. record the summary (ppl before/after, tok/s, first-step time) in run.json

    zpctl train configs/llm/smollm2-135m_lora.yaml [--set train.steps=20]
    zpctl resume <run-id>
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..config import StrictModel, config_dict, config_hash

# ---- typed config (the YAML schema) ------------------------------------------------------------------------


class ModelSection(StrictModel):
    config: str = Field(description="named architecture in models.llama.CONFIGS, e.g. smollm2-135m, tiny")
    weights: str | None = Field(None, description="named model | .gguf | HF dir | null (random init from seed)")
    tokenizer: str | None = Field(None, description="tokenizer source; default: the weights, else smollm2-135m")
    overrides: dict = Field(default_factory=dict, description="LlamaConfig fields to change (random init only)")


class LoraSection(StrictModel):
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class DataSection(StrictModel):
    datasets: list[str] = Field(description="governed dataset names (approved with `zpctl data approve`)")
    format: Literal["text", "jsonl"] = "text"
    seq_len: int = 128
    val_fraction: float = 0.05
    packing: bool = True
    max_docs: int | None = Field(None, description="use only the first N documents (bounded runs, tests)")
    max_chars: int | None = Field(None, description="truncate each text document to N characters")
    val_batches: int = Field(8, description="validation batches per evaluation (fixed set)")


class TrainSection(StrictModel):
    steps: int = 60
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 3.0e-4
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    loss_scale: float = 32768.0
    grad_clip: float = 1.0
    eval_every: int = 20
    ckpt_every: int = 20
    keep_ckpts: int = 2
    seed: int = 0
    jit: bool = True


class LLMFinetuneConfig(StrictModel):
    recipe: Literal["llm_finetune"] = "llm_finetune"
    model: ModelSection
    method: Literal["lora", "full"] = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)


# ---- building blocks (also used by `zpctl model info`, `lora merge`, export) -------------------------------


def model_config(cfg: LLMFinetuneConfig):
    from ..models.llama import get_config
    try:
        mc = get_config(cfg.model.config, **cfg.model.overrides)
    except (KeyError, TypeError, ValueError) as e:
        from ..errors import ConfigError
        raise ConfigError(f"model.config {cfg.model.config!r} / overrides {cfg.model.overrides}: {e}") from None
    return mc


def build_model(cfg: LLMFinetuneConfig):
    """-> (model, llama config, tokenizer). Weights load as fp32 masters; compute dtype from train.precision."""
    from tinygrad import Tensor

    from ..data.text import load_tokenizer
    from ..engine import compute_dtype
    from ..errors import ConfigError
    from ..models.llama import Llama
    from ..models.registry import load_model
    cd = compute_dtype(cfg.train.precision)
    if cfg.model.weights:
        model, mc, tok = load_model(cfg.model.weights, compute_dtype=cd)
        want = model_config(cfg)
        if (mc.dim, mc.n_layers, mc.vocab_size) != (want.dim, want.n_layers, want.vocab_size):
            raise ConfigError(f"model.weights {cfg.model.weights} is dim={mc.dim} layers={mc.n_layers} "
                              f"vocab={mc.vocab_size}, but model.config {cfg.model.config} says dim={want.dim} "
                              f"layers={want.n_layers} vocab={want.vocab_size}; make them agree")
        if cfg.model.tokenizer:
            tok = load_tokenizer(cfg.model.tokenizer)
    else:
        mc = model_config(cfg)
        Tensor.manual_seed(cfg.train.seed)
        model = Llama(mc, compute_dtype=cd)
        from ..models.llama import state_dict
        Tensor.realize(*state_dict(model).values())
        tok = load_tokenizer(cfg.model.tokenizer or "smollm2-135m")
        if tok.vocab_size > mc.vocab_size:
            raise ConfigError(f"tokenizer has {tok.vocab_size} tokens but the model vocab is {mc.vocab_size}; "
                              "set model.overrides.vocab_size or use a matching tokenizer")
    return model, mc, tok


def trainable_params(model, cfg: LLMFinetuneConfig) -> dict:
    """LoRA: wrap and return adapters (base frozen). Full: every weight of the model."""
    from ..models.llama import state_dict
    if cfg.method == "lora":
        from ..models.lora import LoRASpec, apply_lora
        return apply_lora(model, LoRASpec(**cfg.lora.model_dump()), seed=cfg.train.seed)
    return dict(state_dict(model))


def lm_loss(model):
    """Mean next-token cross-entropy over labelled positions (label -1 = prompt/padding, ignored)."""
    def loss(x, y):
        return model(x).sparse_categorical_crossentropy(y, ignore_index=-1)
    return loss


def warm_start_args(model, cfg: LLMFinetuneConfig, params: dict) -> dict:
    """Trainer kwargs that let its compiled steps be stored and reused by the next process (engine/jitcache.py):
    every other tensor the loss reads, and what the loss computes."""
    from ..models.llama import bound_tensors, cache_key
    trainable = {id(t) for t in params.values()}
    frozen = {k: t for k, t in bound_tensors(model).items() if id(t) not in trainable}
    key = {"recipe": "llm_finetune", **cache_key(model), "method": cfg.method,
           "lora": cfg.lora.model_dump() if cfg.method == "lora" else None}
    return {"frozen": frozen, "cache_key": key}


def governed_documents(cfg: LLMFinetuneConfig, run_id: str | None):
    """Ask the governance gate for the approved datasets, then read only their recorded files."""
    from ..data.text import read_documents
    from ..errors import ZeropointError
    try:
        from ..governance.gate import require_approved
    except ImportError:
        raise ZeropointError("the governance gate (zeropoint.governance.gate) is not installed; "
                             "training reads only approved datasets") from None
    from ..governance.audit import default_actor
    from ..governance.gate import read_verified
    records = require_approved(cfg.data.datasets, actor=default_actor(), purpose=f"llm_finetune:{cfg.method}",
                               run_id=run_id)
    by_path = {f["path"]: f for rec in records for f in rec.get("files", [])}
    # every byte trained on is re-hashed as it is read (a file swapped after the gate is refused)
    return records, read_documents(sorted(by_path), cfg.data.format, read=lambda p: read_verified(by_path[str(p)]))


# ---- the recipe --------------------------------------------------------------------------------------------


def run(cfg: LLMFinetuneConfig, *, allow_simulated: bool = False, run_id: str | None = None, resume: bool = False,
        progress: bool = True, command: str = "zpctl train") -> dict:
    from tinygrad import Tensor

    from ..checkpoint import latest_valid, load_checkpoint, save_checkpoint
    from ..data.text import build_dataset
    from ..engine import EngineConfig, Trainer, cpu_threads, fit, jitcache
    from ..errors import ZeropointError
    from ..evidence import load_run, new_run_id, start_run
    from ..models.llama import state_dict
    from ..scope import require_real_compute

    # 1. scope and governance first: nothing is computed or read before both say yes
    scope = require_real_compute(allow_simulated)
    jitcache.enable()   # kernels compiled by an earlier run load from $ZP_CACHE instead of compiling
    cpu_threads.enable()   # split kernels run on every core
    if resume:
        prior = load_run(run_id)
        run_id = prior.id
    else:
        run_id = run_id or new_run_id("llm_finetune")
    datasets, docs = governed_documents(cfg, run_id)
    t = cfg.train

    # 2. evidence
    with start_run(command, cfg, kind="llm_finetune", seed=t.seed, datasets=datasets, scope=scope,
                   run_id=run_id, resume=resume) as run:
        # 3-4. model and what trains
        t_load = time.perf_counter()
        model, mc, tok = build_model(cfg)
        params = trainable_params(model, cfg)
        base_names = [k for k in state_dict(model) if ".lora_" not in k]   # the frozen base under LoRA
        n_train = sum(int(np.prod(p.shape)) for p in params.values())
        n_base = sum(int(np.prod(p.shape)) for k, p in state_dict(model).items() if ".lora_" not in k)
        n_total = n_base + (n_train if cfg.method == "lora" else 0)
        run.event("model", config=cfg.model.config, weights=cfg.model.weights, method=cfg.method,
                  params_total=n_total, params_trainable=n_train, load_s=round(time.perf_counter() - t_load, 3),
                  load_info=getattr(model, "load_info", None))

        # 5. data
        ds = build_dataset(docs, tok, seq_len=cfg.data.seq_len, val_fraction=cfg.data.val_fraction, seed=t.seed,
                           micro_batch_size=t.micro_batch_size, grad_accum=t.grad_accum, packing=cfg.data.packing,
                           max_docs=cfg.data.max_docs, max_chars=cfg.data.max_chars)
        val = ds.val_batches(t.micro_batch_size, cfg.data.val_batches)
        run.event("data", **ds.stats, val_batches=len(val))
        if not val:
            raise ZeropointError(f"validation split has {len(ds.val_x)} samples, fewer than one batch of "
                                 f"{t.micro_batch_size}; raise data.val_fraction or lower data.seq_len")

        # 6. engine
        loss_fn = lm_loss(model)
        ecfg = EngineConfig(lr=t.lr, total_steps=t.steps, warmup_steps=t.warmup_steps, min_lr_ratio=t.min_lr_ratio,
                            weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                            precision=t.precision, loss_scale=t.loss_scale, jit=t.jit)
        trainer = Trainer(params, loss_fn, ecfg, **warm_start_args(model, cfg, params))

        # 7. resume from the newest checkpoint that verifies
        start = 0
        if resume:
            path, skipped = latest_valid(run.checkpoints_dir)
            for s in skipped:
                run.event("checkpoint_rejected", **s)
            if path is not None:
                ck = load_checkpoint(path)
                if ck.manifest.get("config_sha256") != config_hash(cfg):
                    raise ZeropointError(f"{path} was written with a different config; resume needs the same config")
                _load_weights(model, params, ck, cfg)
                trainer.load_optimizer_state(ck.optimizer, ck.state["engine"])
                start = ck.step
                run.event("resumed_from", step=start, path=str(path))
            run.truncate_after(start)

        def evaluate(step: int) -> dict:
            vl = trainer.eval_loss(loss_fn, val)
            ev = {"val_loss": vl, "val_ppl": math.exp(min(vl, 50.0))}
            return ev

        def save(step: int) -> Path:
            weights = {k: p.numpy() for k, p in params.items()}
            arrays, scalars = trainer.optimizer_state()
            state = {"engine": scalars, "data": ds.position(step), "rng": {"seed": t.seed, "tinygrad_seed": Tensor._seed}}
            return save_checkpoint(run.checkpoints_dir, step, weights=weights,
                                   weights_kind="adapter" if cfg.method == "lora" else "model",
                                   optimizer=arrays, state=state, config=config_dict(cfg),
                                   config_sha256=config_hash(cfg), keep=t.keep_ckpts,
                                   extra_files={"model_config.json": _json_bytes(mc.to_dict()),
                                                **({"adapter_config.json": _json_bytes(_adapter_config(cfg))}
                                                   if cfg.method == "lora" else {})})

        # 8. evaluate the starting point, train, evaluate
        if start == 0:
            base_eval = evaluate(0)
            run.event("eval", step=0, **base_eval)
        else:   # the starting model's eval was logged before the interruption
            from ..evidence import read_metrics
            base_eval = next(({"val_loss": r["val_loss"], "val_ppl": r["val_ppl"]} for r in read_metrics(run)
                              if r.get("event") == "eval" and r.get("step") == 0), None)
        base_snapshot = _fingerprint(model, base_names) if cfg.method == "lora" else None
        tokens_per_step = t.micro_batch_size * t.grad_accum * ds.seq_len
        evals: list[dict] = []

        def eval_fn(step):
            ev = evaluate(step)
            evals.append({"step": step, **ev})
            return ev
        t0 = time.perf_counter()
        hist = fit(trainer, ds.batches, steps=t.steps, start_step=start, run=run, tokens_per_step=tokens_per_step,
                   eval_every=t.eval_every, eval_fn=eval_fn, ckpt_every=t.ckpt_every, save_ckpt=save,
                   progress=progress, description=f"{cfg.model.config} {cfg.method}")
        wall = time.perf_counter() - t0

        # 9. summary
        final = evals[-1] if evals else evaluate(t.steps)
        steady = [h.step_s for h in hist[2:]] or [h.step_s for h in hist]
        summary = {
            "steps": t.steps, "steps_this_session": len(hist), "start_step": start,
            "train_wall_s": round(wall, 3), "first_step_s": round(hist[0].step_s, 3) if hist else None,
            "steady_step_s": round(float(np.median(steady)), 4) if steady else None,
            "tokens_per_s": round(tokens_per_step / float(np.median(steady)), 1) if steady else None,
            "base_eval": base_eval, "final_eval": final,
            "ppl_change_pct": (round(100.0 * (final["val_ppl"] - base_eval["val_ppl"]) / base_eval["val_ppl"], 3)
                               if base_eval else None),
            "first_loss": hist[0].loss if hist else None, "last_loss": hist[-1].loss if hist else None,
            "skipped_steps": trainer.skipped_steps, "params_total": n_total, "params_trainable": n_train,
            "data": ds.stats, "checkpoint": str(sorted(run.checkpoints_dir.glob("step-*"))[-1])
            if run.checkpoints_dir.is_dir() and any(run.checkpoints_dir.glob("step-*")) else None,
        }
        if base_snapshot is not None:
            summary["base_weights_unchanged"] = _fingerprint(model, base_names) == base_snapshot
        run.update(summary=summary)
        return {"run_id": run.id, "run_dir": str(run.dir), **summary}


# ---- helpers -----------------------------------------------------------------------------------------------


def _json_bytes(obj) -> bytes:
    import json
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _adapter_config(cfg: LLMFinetuneConfig) -> dict:
    """PEFT-style adapter_config.json, so the adapter says what it applies to."""
    return {"peft_type": "LORA", "r": cfg.lora.rank, "lora_alpha": cfg.lora.alpha, "lora_dropout": cfg.lora.dropout,
            "target_modules": cfg.lora.targets, "base_model_name_or_path": cfg.model.weights or cfg.model.config,
            "bias": "none"}


def _fingerprint(model, names) -> str:
    import hashlib

    from ..models.llama import state_dict
    sd = state_dict(model)
    h = hashlib.sha256()
    for k in sorted(names):
        if k in sd:
            h.update(k.encode())
            h.update(sd[k].numpy().tobytes())
    return h.hexdigest()


def _load_weights(model, params: dict, ck, cfg: LLMFinetuneConfig) -> None:
    from tinygrad import Tensor

    from ..errors import ZeropointError
    if cfg.method == "lora":
        from ..models.lora import load_adapters
        if ck.weights_kind != "adapter":
            raise ZeropointError(f"{ck.path} holds full model weights but the config trains LoRA")
        load_adapters(model, ck.weights)
        return
    missing = sorted(set(params) - set(ck.weights))
    if missing:
        raise ZeropointError(f"{ck.path}: model.safetensors lacks {missing[:3]}; it is not this model's checkpoint")
    for k, p in params.items():
        p.assign(Tensor(np.ascontiguousarray(ck.weights[k], dtype=np.float32))).realize()


def load_checkpoint_model(path: str | Path, *, merge: bool = True):
    """A trained model from a checkpoint dir: verified, base rebuilt from its config, adapters applied (and
    merged when `merge`). -> (model, llama config, tokenizer, typed config)."""
    from ..checkpoint import load_checkpoint
    from ..config import validate
    ck = load_checkpoint(path)
    cfg = validate(LLMFinetuneConfig, ck.config, f"{path}/config.json")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "fp32"})})
    model, mc, tok = build_model(cfg)
    params = trainable_params(model, cfg)
    _load_weights(model, params, ck, cfg)
    if cfg.method == "lora" and merge:
        from ..models.lora import merge_lora
        merge_lora(model)
    return model, mc, tok, cfg


# ---- sizing without weights (`zpctl model info`) -----------------------------------------------------------

_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def model_info(cfg: LLMFinetuneConfig) -> dict:
    """Parameter counts and a memory estimate per component, from shapes alone (no weights are loaded).

    weights: fp32 master copy of every parameter (what the engine keeps) plus, for fp16/bf16, one compute-dtype
    copy of the frozen base (LoRA) or all weights (full) as cast for the matmuls.
    grads: fp32 accumulation buffers for the trainable parameters. optimizer: AdamW m and v, fp32.
    activations: what backward keeps per micro-batch: per layer the residual input and norms (fp32), the
    q/k/v/attention/MLP intermediates (compute dtype), the attention scores and probabilities (fp32,
    B*H*T*T each), then the fp32 logits and their softmax (B*T*V each)."""
    from ..models.llama import PUBLISHED_PARAMS, param_count
    from ..models.lora import LoRASpec, count_lora_params
    mc = model_config(cfg)
    t, d = cfg.train, cfg.data
    n = param_count(mc)
    lora = count_lora_params(mc, LoRASpec(**cfg.lora.model_dump())) if cfg.method == "lora" else 0
    trainable = lora if cfg.method == "lora" else n
    c = _BYTES[t.precision]
    B, T = t.micro_batch_size, d.seq_len
    kv = mc.n_kv_heads * mc.head_dim
    per_tok_layer = 4 * mc.dim * 2 + c * (2 * mc.dim + mc.n_heads * mc.head_dim + 2 * kv + mc.dim + 4 * mc.hidden_dim)
    attn = 2 * 4 * mc.n_heads * T * T * B + c * mc.n_heads * T * T * B
    act = mc.n_layers * (per_tok_layer * B * T + attn) + 2 * 4 * B * T * mc.vocab_size
    weights = 4 * (n + lora) + (c * n if c != 4 else 0)
    mem = {"weights_bytes": weights, "grads_bytes": 4 * trainable, "optimizer_bytes": 8 * trainable,
           "activations_bytes": act}
    mem["total_bytes"] = sum(mem.values())
    pub = PUBLISHED_PARAMS.get(cfg.model.config)
    return {
        "config": cfg.model.config, "method": cfg.method, "precision": t.precision,
        "micro_batch_size": B, "seq_len": T, "grad_accum": t.grad_accum,
        "architecture": {k: getattr(mc, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim",
                                                      "vocab_size", "tie_embeddings", "rope_theta")},
        "params": n, "published_params": pub,
        "params_vs_published_pct": round(100.0 * (n - pub) / pub, 4) if pub else None,
        "lora_params": lora if cfg.method == "lora" else None,
        "trainable_params": trainable, "trainable_pct": round(100.0 * trainable / n, 4),
        "memory": mem, "memory_gib": {k.replace("_bytes", ""): round(v / 2 ** 30, 3) for k, v in mem.items()},
        "lora": cfg.lora.model_dump() if cfg.method == "lora" else None,
        "note": "estimate from shapes; no weights loaded",
    }


# ---- LoRA merge / export -----------------------------------------------------------------------------------


def merge_to_hf(checkpoint: str | Path, out: str | Path) -> dict:
    """Verified checkpoint -> adapters merged into the base -> HF directory (config.json + safetensors)."""
    from ..errors import ZeropointError
    from ..models.lora import lora_modules, merge_lora
    from ..models.tokenizer import Tokenizer
    out = Path(out)
    model, mc, tok, cfg = load_checkpoint_model(checkpoint, merge=False)
    n_adapted = len(lora_modules(model))
    merged = merge_lora(model)
    if cfg.method == "lora" and merged == 0:
        raise ZeropointError(f"{checkpoint} has no LoRA adapters to merge")
    from ..models.hf import save_hf_dir
    # the byte tokenizer of tiny configs has no tokenizer.json form; the directory then holds weights only
    save_hf_dir(model, mc, tok if isinstance(tok, Tokenizer) else None, out)
    return {"checkpoint": str(checkpoint), "out": str(out), "method": cfg.method, "merged_modules": merged,
            "adapted_modules": n_adapted, "config": cfg.model.config}
