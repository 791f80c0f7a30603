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
from ..perf.hooks import PERF_HOOKS
from ..models.llm import (LLMSpec, LoadedLM, adapter_config, build_llm, llm_memory_plan, lm_loss,
                          load_trained_weights, trainable_params)
from ..models.lora import LoRASpec

# ---- typed config (the YAML schema) ------------------------------------------------------------------------


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
    model: LLMSpec
    method: Literal["lora", "full"] = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)


# ---- building blocks ---------------------------------------------------------------------------------------


def lora_spec(cfg: LLMFinetuneConfig) -> LoRASpec:
    return LoRASpec(**cfg.lora.model_dump())


def build(cfg: LLMFinetuneConfig) -> tuple[LoadedLM, dict]:
    """The model this config trains and its trainable tensors (LoRA adapters, or every weight)."""
    lm = build_llm(cfg.model, precision=cfg.train.precision, seed=cfg.train.seed)
    return lm, trainable_params(lm.model, cfg.method, lora_spec(cfg), cfg.train.seed)


def model_info(cfg: LLMFinetuneConfig) -> dict:
    """`zpctl model info`: parameter counts and memory per component at this config's batch (no weights)."""
    t = cfg.train
    return llm_memory_plan(cfg.model, method=cfg.method, lora=lora_spec(cfg), precision=t.precision,
                           micro_batch_size=t.micro_batch_size, seq_len=cfg.data.seq_len, grad_accum=t.grad_accum)


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
    from ..engine import EngineConfig, Trainer, fit
    from ..errors import ZeropointError
    from ..evidence import load_run, new_run_id, start_run
    from ..models.llama import state_dict
    from ..scope import require_real_compute

    # 1. scope and governance first: nothing is computed or read before both say yes
    scope = require_real_compute(allow_simulated)
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
        lm, params = build(cfg)
        model, mc, tok = lm.model, lm.config, lm.tokenizer
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
        trainer = Trainer(params, loss_fn, ecfg)

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
                load_trained_weights(model, params, ck, cfg.method)
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
                                                **({"adapter_config.json": _json_bytes(adapter_config(cfg.model, lora_spec(cfg)))}
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
                   progress=progress, hooks=PERF_HOOKS, description=f"{cfg.model.config} {cfg.method}")
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
