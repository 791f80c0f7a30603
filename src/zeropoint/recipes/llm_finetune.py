"""Recipe `llm_finetune`: finetune a Llama-family model (LoRA or full) on an approved text corpus.

Read top to bottom, like a torchtune recipe:
  1. refuse simulated compute, ask governance for the approved datasets (before any data is read)
  2. open the run (evidence) and seed everything
  3. build the model: named config, base weights (named model | .gguf | HF dir | none = random init)
  4. LoRA: wrap target projections, train only the adapters, store the frozen base without fp32 masters (compute
     dtype, or NF4/int8 with lora.base_quant); full: train every weight
  5. tokenise the corpus, split by document, pack to seq_len
  6. the engine: AdamW on fp32 masters, precision, accumulation, clipping, warm-up + cosine
  7. resume: load the newest valid checkpoint (verified) and continue at its step
  8. validation loss/perplexity of the starting model, train with eval + checkpoint cadence, final eval; the
     final checkpoint carries the model card (held-out loss and perplexity against the starting model)
  9. record the summary (ppl before/after, tok/s, first-step time) in run.json

    zpctl train configs/llm/smollm2-135m_lora.yaml [--set train.steps=20]
    zpctl resume <run-id>
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator
from tinygrad import Tensor, dtypes

from ..config import Count, DatasetName, PositiveCount, SeqLen, SplitFraction, StrictModel
from ..data.text import build_dataset, read_documents
from ..engine import Trainer, fit
from ..engine.train_section import TrainSection
from ..errors import ConfigError, ZeropointError
from ..evidence import read_metrics, start_run
from ..governance.audit import default_actor
from ..governance.gate import read_verified
from ..modelcard import LLM_INTENDED_USE, LLM_OUT_OF_SCOPE, LLM_RISKS, build_card, card_files
from ..models.llama import LlamaConfig, param_count, state_dict
from ..models.llm import (
    DROPOUT_WITH_CHECKPOINTING,
    LLMSpec,
    LoadedLM,
    adapter_config,
    build_llm,
    llm_memory_plan,
    lm_loss,
    load_trained_weights,
    trainable_params,
    warm_start_args,
)
from ..models.lora import LoRASpec
from ..models.peft import init_adapters_from_peft
from ..perf.hooks import PERF_HOOKS
from .common import admit, json_bytes, resume_from_checkpoint, save_training_state, throughput_summary


# ---- typed config (the YAML schema) ------------------------------------------------------------------------
class LoraSection(StrictModel):
    rank: Annotated[PositiveCount, Field(le=65536)] = 8
    alpha: Annotated[float, Field(gt=0, le=1e6)] = 16.0
    dropout: SplitFraction = 0.0
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    base_quant: Literal["none", "nf4", "int8"] = Field(
        "none", description="frozen base projections: none (compute dtype) | nf4 (QLoRA) | int8 (per-row)")
    init_from: str | None = Field(None, description="PEFT adapter directory (adapter_model.safetensors + "
                                  "adapter_config.json) the adapters start from instead of B = 0; its r, lora_alpha "
                                  "and target_modules must equal rank, alpha and targets here")


class DataSection(StrictModel):
    datasets: list[DatasetName] = Field(min_length=1, description="governed dataset names (approved with `zpctl data approve`)")
    format: Literal["text", "jsonl"] = "text"
    seq_len: SeqLen = 128
    val_fraction: SplitFraction = 0.05
    packing: bool = True
    max_docs: PositiveCount | None = Field(None, description="use only the first N documents (bounded runs, tests)")
    max_chars: PositiveCount | None = Field(None, description="truncate each text document to N characters")
    val_batches: Count = Field(8, description="validation batches per evaluation (fixed set)")


class LLMTrainSection(TrainSection):
    steps: PositiveCount = 60
    warmup_steps: Count = 5
    eval_every: Count = Field(20, description="validation loss every N steps (and at the last)")
    ckpt_every: Count = 20


class LLMFinetuneConfig(StrictModel):
    recipe: Literal["llm_finetune"] = "llm_finetune"
    model: LLMSpec
    method: Literal["lora", "full"] = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: LLMTrainSection = Field(default_factory=LLMTrainSection)

    @model_validator(mode="after")
    def _memory_options_agree(self):
        if self.method == "full" and self.lora.base_quant != "none":
            raise ValueError(f"lora.base_quant {self.lora.base_quant} quantises a frozen base; method full trains "
                             "every weight. Use method: lora, or lora.base_quant: none")
        if self.train.activation_checkpointing != "none" and self.method == "lora" and self.lora.dropout > 0:
            raise ValueError(DROPOUT_WITH_CHECKPOINTING)
        return self


# ---- building blocks (also used by `zpctl model info` and the training-step bench) -------------------------
def lora_spec(cfg: LLMFinetuneConfig) -> LoRASpec:
    return LoRASpec.from_section(cfg.lora.model_dump())


def build(cfg: LLMFinetuneConfig) -> tuple[LoadedLM, dict]:
    """The model this config trains and its trainable tensors (LoRA adapters, or every weight); LoRA adapters
    start from `lora.init_from` (a PEFT adapter directory) when it is set."""
    t = cfg.train
    lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
    params = trainable_params(lm.model, cfg.method, lora_spec(cfg), t.seed, precision=t.precision)
    if cfg.lora.init_from:
        if cfg.method != "lora":
            raise ConfigError("lora.init_from is a LoRA adapter; it needs method: lora")
        init_adapters_from_peft(lm.model, cfg.lora.init_from, lora_spec(cfg))
    return lm, params


def model_info(cfg: LLMFinetuneConfig) -> dict:
    """`zpctl model info`: parameter counts and memory per component at this config's batch (no weights)."""
    t = cfg.train
    return llm_memory_plan(cfg.model, method=cfg.method, lora=lora_spec(cfg), precision=t.precision,
                           micro_batch_size=t.micro_batch_size, seq_len=cfg.data.seq_len, grad_accum=t.grad_accum,
                           activation_checkpointing=t.activation_checkpointing,
                           activation_checkpointing_k=t.activation_checkpointing_k)


def governed_documents(cfg: LLMFinetuneConfig, records: list[dict]) -> list[dict]:
    """The documents of the approved datasets, read only from their recorded files."""
    by_path = {f["path"]: f for rec in records for f in rec.get("files", [])}
    # every byte trained on is re-hashed as it is read (a file swapped after the gate is refused)
    return read_documents(sorted(by_path), cfg.data.format, read=lambda p: read_verified(by_path[str(p)]))


def param_counts(mc: LlamaConfig, params: dict, method: str) -> tuple[int, int]:
    """(total, trainable): the base (counted from shapes: an NF4 base packs two weights a byte) plus, under LoRA,
    its adapters."""
    n_train = sum(int(np.prod(p.shape)) for p in params.values())
    return param_count(mc) + (n_train if method == "lora" else 0), n_train


def base_fingerprint(model) -> str:
    """SHA-256 over the frozen base weights (every tensor but the LoRA adapters), to show they did not move."""
    h = hashlib.sha256()
    for k, t in sorted(state_dict(model).items()):
        if ".lora_" not in k:
            h.update(k.encode())
            h.update((t.bitcast(dtypes.uint16) if t.dtype == dtypes.bfloat16 else t).numpy().tobytes())  # no bf16 on CPU
    return h.hexdigest()


def model_card(cfg: LLMFinetuneConfig, *, run, scope, mc, params_total: int, datasets: list[dict],
               base_eval: dict | None, final_eval: dict, n_val_tokens: int) -> dict:
    """The card of the final checkpoint: held-out loss and perplexity against the model this run started from."""
    t, d = cfg.train, cfg.data
    eval_set = (f"held-out {d.val_fraction:.0%} of {', '.join(d.datasets)} "
                f"({d.val_batches} batches of {t.micro_batch_size} x {d.seq_len} tokens)")
    note = "baseline: the same split scored by the model before this run's training (step 0)"
    metrics = [{"name": f"heldout_{k}", "value": final_eval[k], "eval_set": eval_set, "n": n_val_tokens,
                "baseline": (base_eval or {}).get(k), "note": note} for k in ("val_loss", "val_ppl")]
    arch = {k: v for k, v in mc.to_dict().items()
            if k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "max_seq_len")}
    return build_card(
        name=f"{cfg.model.config}-{cfg.method}-{run.id}", task="causal language modelling (finetune)",
        run_id=run.id, simulated=scope.simulated, architecture=arch or {"config": cfg.model.config},
        params=params_total, datasets=datasets, metrics=metrics,
        training={"method": cfg.method, "base_weights": cfg.model.weights, "steps": t.steps, "lr": t.lr,
                  "micro_batch_size": t.micro_batch_size, "grad_accum": t.grad_accum, "precision": t.precision,
                  "seed": t.seed},
        intended_use=LLM_INTENDED_USE, out_of_scope=LLM_OUT_OF_SCOPE, risks=LLM_RISKS,
        limitations=[f"Measured on {n_val_tokens:,} held-out tokens of the training corpus only; "
                     "no downstream task was evaluated (run `zpctl eval` or `zpctl release` for that)."])


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
        n_total, n_train = param_counts(mc, params, cfg.method)
        run.event("model", config=cfg.model.config, weights=cfg.model.weights, method=cfg.method,
                  params_total=n_total, params_trainable=n_train, load_s=round(time.perf_counter() - t_load, 3),
                  load_info=getattr(model, "load_info", None), frozen_base=getattr(model, "freeze_info", None),
                  activation_checkpointing=t.activation_checkpointing)

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
        loss_fn = lm_loss(model, t.activation_checkpointing, t.activation_checkpointing_k)
        trainer = Trainer(params, loss_fn, t.engine_config(total_steps=t.steps),
                          **warm_start_args(model, params, method=cfg.method, lora=lora_spec(cfg),
                                            activation_checkpointing=t.activation_checkpointing,
                                            activation_checkpointing_k=t.activation_checkpointing_k))
        start = resume_from_checkpoint(run, cfg, trainer, lambda ck: load_trained_weights(
            model, params, ck, cfg.method)) if resume else 0

        def evaluate(step: int) -> dict:
            vl = trainer.eval_loss(loss_fn, val)
            return {"val_loss": vl, "val_ppl": math.exp(min(vl, 50.0))}

        extra_files = {"model_config.json": json_bytes(mc.to_dict())}
        if cfg.method == "lora":
            extra_files["adapter_config.json"] = json_bytes(adapter_config(cfg.model, lora_spec(cfg)))

        def save(step: int) -> Path:
            # the final checkpoint carries the model card (fit evaluates the last step before saving it)
            card = (card_files(model_card(cfg, run=run, scope=scope, mc=mc, params_total=n_total, datasets=datasets,
                                          base_eval=base_eval, final_eval=evals[-1],
                                          n_val_tokens=len(val) * t.micro_batch_size * ds.seq_len))
                    if step == t.steps and evals and evals[-1]["step"] == step else {})
            return save_training_state(run, step, cfg, trainer, weights={k: p.numpy() for k, p in params.items()},
                                       weights_kind="adapter" if cfg.method == "lora" else "model",
                                       state={"data": ds.position(step),
                                              "rng": {"seed": t.seed, "tinygrad_seed": Tensor._seed}},
                                       extra_files={**extra_files, **card})

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
