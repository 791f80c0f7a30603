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

import hashlib
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from tinygrad import Tensor

from ..config import StrictModel
from ..data.text import build_dataset, read_documents
from ..engine import Trainer, fit
from ..engine.parallel import per_device_plan
from ..engine.train_section import TrainSection
from ..errors import ZeropointError
from ..evidence import read_metrics, start_run
from ..governance.audit import default_actor
from ..governance.gate import read_verified
from ..models.llama import state_dict
from ..models.llm import (
    LLMSpec,
    LoadedLM,
    adapter_config,
    build_llm,
    llm_memory_plan,
    lm_loss,
    load_trained_weights,
    trainable_params,
)
from ..models.lora import LoRASpec
from ..perf.hooks import PERF_HOOKS
from .common import admit, json_bytes, place_model, resume_from_checkpoint, save_training_state, throughput_summary


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


class LLMTrainSection(TrainSection):
    steps: int = 60
    warmup_steps: int = 5
    eval_every: int = Field(20, ge=0, description="validation loss every N steps (and at the last)")
    ckpt_every: int = 20


class LLMFinetuneConfig(StrictModel):
    recipe: Literal["llm_finetune"] = "llm_finetune"
    model: LLMSpec
    method: Literal["lora", "full"] = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: LLMTrainSection = Field(default_factory=LLMTrainSection)


# ---- building blocks (also used by `zpctl model info` and the training-step bench) -------------------------
def lora_spec(cfg: LLMFinetuneConfig) -> LoRASpec:
    return LoRASpec(**cfg.lora.model_dump())


def build(cfg: LLMFinetuneConfig) -> tuple[LoadedLM, dict]:
    """The model this config trains and its trainable tensors (LoRA adapters, or every weight)."""
    lm = build_llm(cfg.model, precision=cfg.train.precision, seed=cfg.train.seed)
    return lm, trainable_params(lm.model, cfg.method, lora_spec(cfg), cfg.train.seed)


def model_info(cfg: LLMFinetuneConfig, devices: int | None = None, shard_optimizer: bool | None = None) -> dict:
    """`zpctl model info`: parameter counts and memory per component at this config's batch (no weights); with
    `devices`, also one device's share under data parallel (`per_device`, ZeRO-1 if `shard_optimizer`)."""
    t = cfg.train
    plan = llm_memory_plan(cfg.model, method=cfg.method, lora=lora_spec(cfg), precision=t.precision,
                           micro_batch_size=t.micro_batch_size, seq_len=cfg.data.seq_len, grad_accum=t.grad_accum)
    if devices is not None:
        plan["per_device"] = per_device_plan(plan["memory"], devices, micro_batch_size=t.micro_batch_size,
                                             shard_optimizer=t.shard_optimizer if shard_optimizer is None
                                             else shard_optimizer)
    return plan


def governed_documents(cfg: LLMFinetuneConfig, records: list[dict]) -> list[dict]:
    """The documents of the approved datasets, read only from their recorded files."""
    by_path = {f["path"]: f for rec in records for f in rec.get("files", [])}
    # every byte trained on is re-hashed as it is read (a file swapped after the gate is refused)
    return read_documents(sorted(by_path), cfg.data.format, read=lambda p: read_verified(by_path[str(p)]))


def param_counts(model, params: dict, method: str) -> tuple[int, int]:
    """(total, trainable): the base plus, under LoRA, its adapters."""
    n_train = sum(int(np.prod(p.shape)) for p in params.values())
    n_base = sum(int(np.prod(p.shape)) for k, p in state_dict(model).items() if ".lora_" not in k)
    return n_base + (n_train if method == "lora" else 0), n_train


def base_fingerprint(model) -> str:
    """SHA-256 over the frozen base weights (every tensor but the LoRA adapters), to show they did not move."""
    h = hashlib.sha256()
    for k, t in sorted(state_dict(model).items()):
        if ".lora_" not in k:
            h.update(k.encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


# ---- the recipe --------------------------------------------------------------------------------------------
def run(cfg: LLMFinetuneConfig, *, allow_simulated: bool = False, run_id: str | None = None, resume: bool = False,
        progress: bool = True, command: str = "zpctl train") -> dict:
    # 1. scope and governance first: nothing is computed or read before both say yes
    scope, run_id, datasets = admit("llm_finetune", cfg.data.datasets, allow_simulated=allow_simulated, run_id=run_id,
                                    resume=resume, purpose=f"llm_finetune:{cfg.method}", actor=default_actor())
    docs = governed_documents(cfg, datasets)
    t = cfg.train

    # 2. evidence
    with start_run(command, cfg, kind="llm_finetune", seed=t.seed, datasets=datasets, scope=scope,
                   run_id=run_id, resume=resume) as run:
        # 3-4. model and what trains
        t_load = time.perf_counter()
        lm, params = build(cfg)
        model, mc, tok = lm.model, lm.config, lm.tokenizer
        n_total, n_train = param_counts(model, params, cfg.method)
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

        # 6. engine; 7. resume from the newest checkpoint that verifies
        loss_fn = lm_loss(model)
        trainer = Trainer(params, loss_fn, t.engine_config(total_steps=t.steps))
        place_model(run, trainer, frozen=state_dict(model).values())
        start = resume_from_checkpoint(run, cfg, trainer, lambda ck: load_trained_weights(
            model, params, ck, cfg.method)) if resume else 0

        def evaluate(step: int) -> dict:
            vl = trainer.eval_loss(loss_fn, val)
            return {"val_loss": vl, "val_ppl": math.exp(min(vl, 50.0))}

        extra_files = {"model_config.json": json_bytes(mc.to_dict())}
        if cfg.method == "lora":
            extra_files["adapter_config.json"] = json_bytes(adapter_config(cfg.model, lora_spec(cfg)))

        def save(step: int) -> Path:
            return save_training_state(run, step, cfg, trainer, weights={k: p.numpy() for k, p in params.items()},
                                       weights_kind="adapter" if cfg.method == "lora" else "model",
                                       state={"data": ds.position(step),
                                              "rng": {"seed": t.seed, "tinygrad_seed": Tensor._seed}},
                                       extra_files=extra_files)

        # 8. evaluate the starting point (logged before an interruption when resuming), train, evaluate
        if start == 0:
            base_eval = evaluate(0)
            run.event("eval", step=0, **base_eval)
        else:
            base_eval = next(({"val_loss": r["val_loss"], "val_ppl": r["val_ppl"]} for r in read_metrics(run)
                              if r.get("event") == "eval" and r.get("step") == 0), None)
        base_before = base_fingerprint(model) if cfg.method == "lora" else None
        tokens_per_step = t.micro_batch_size * t.grad_accum * ds.seq_len
        evals: list[dict] = []

        def eval_fn(step):
            ev = evaluate(step)
            evals.append({"step": step, **ev})
            return ev
        t0 = time.perf_counter()
        hist = fit(trainer, ds.batches, steps=t.steps, start_step=start, run=run, items_per_step=tokens_per_step,
                   unit="tokens",
                   eval_every=t.eval_every, eval_fn=eval_fn, ckpt_every=t.ckpt_every, save_ckpt=save,
                   progress=progress, hooks=PERF_HOOKS, description=f"{cfg.model.config} {cfg.method}")
        wall = time.perf_counter() - t0

        # 9. summary
        final = evals[-1] if evals else evaluate(t.steps)
        ckpts = sorted(run.checkpoints_dir.glob("step-*")) if run.checkpoints_dir.is_dir() else []
        summary = {
            **throughput_summary(hist, steps=t.steps, start=start, wall=wall, per_step=tokens_per_step, unit="tokens"),
            "base_eval": base_eval, "final_eval": final,
            "ppl_change_pct": (round(100.0 * (final["val_ppl"] - base_eval["val_ppl"]) / base_eval["val_ppl"], 3)
                               if base_eval else None),
            "skipped_steps": trainer.skipped_steps, "params_total": n_total, "params_trainable": n_train,
            "data": ds.stats, "checkpoint": str(ckpts[-1]) if ckpts else None,
        }
        if base_before is not None:
            summary["base_weights_unchanged"] = base_fingerprint(model) == base_before
        run.update(summary=summary)
        return {"run_id": run.id, "run_dir": str(run.dir), **summary}
