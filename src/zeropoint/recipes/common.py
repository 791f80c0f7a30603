"""The steps every recipe shares, so each recipe's `run()` reads top to bottom: the run id, resuming from the
newest checkpoint that verifies, saving a checkpoint, image batches as pure functions of (seed, step), and the
throughput summary. Not a recipe (no `run`): the recipe table in `__init__.py` does not list it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from pydantic import Field, field_validator, model_validator
from tinygrad import Tensor

from ..checkpoint import Checkpoint, latest_valid, load_checkpoint, save_checkpoint
from ..config import (
    BatchSize,
    Count,
    DatasetName,
    Epochs,
    Fraction,
    LearningRate,
    StrictModel,
    config_dict,
    config_hash,
    rename_deprecated,
    validate,
)
from ..data import images as I
from ..engine import StepStats, Trainer, cpu_threads, jitcache
from ..engine.train_section import TrainSection
from ..errors import ConfigError, ZeropointError
from ..evidence import Run, load_run, new_run_id
from ..governance.gate import require_approved
from ..scope import Scope, require_real_compute


class VisionTrainSection(TrainSection):
    """The vision recipes' `train:` section: epochs instead of steps, and their defaults."""
    epochs: Epochs = Field(1.0, description="passes over the training set (fractions allowed)")
    micro_batch_size: BatchSize = 128
    lr: LearningRate = 2e-3
    warmup_steps: Count = 20
    min_lr_ratio: Fraction = 0.05

    @field_validator("activation_checkpointing")
    @classmethod
    def _no_checkpointing(cls, v: str) -> str:
        if v != "none":
            raise ValueError("activation checkpointing is built for llm_finetune only (the vision recipes do not "
                             "cut their models into segments yet); set train.activation_checkpointing: none")
        return v


class ImageDataSection(StrictModel):
    """What the vision recipes' `data:` sections share: one governed dataset, random crop and flip."""
    datasets: list[DatasetName] = Field(description="the governed dataset (approved with `zpctl data approve`), as a "
                                            "one-entry list like every recipe's data.datasets")
    crop_pad: Annotated[Count, Field(le=1024)] = Field(0, description="random crop: pad by this many pixels, crop back at a random offset")
    flip: bool = Field(False, description="random horizontal flip (off for digits: a flipped 2 is not a 2)")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, raw):
        return rename_deprecated(raw, {"dataset": ("datasets", lambda v: [v])}, "data")

    @field_validator("datasets")
    @classmethod
    def _one_dataset(cls, v: list[str]) -> list[str]:
        if len(v) != 1:
            raise ValueError(f"a vision recipe trains on one dataset; data.datasets names {len(v)}")
        return v

    @property
    def dataset(self) -> str:
        return self.datasets[0]


def admit(kind: str, datasets: list[str], *, allow_simulated: bool, run_id: str | None, resume: bool,
          purpose: str | None = None, actor: str | None = None) -> tuple[Scope, str, list[dict]]:
    """Step 1 of every recipe, before any data is read or anything computed: refuse simulated compute, turn on
    the compile caches and every CPU core, settle the run id, ask governance for the approved datasets.
    -> (scope, run id, dataset records)."""
    scope = require_real_compute(allow_simulated)
    jitcache.enable()      # kernels and captured steps an earlier process compiled load from $ZP_CACHE
    cpu_threads.enable()   # split CPU kernels run on every core
    run_id = run_id_for(kind, run_id, resume)
    return scope, run_id, require_approved(datasets, actor=actor, purpose=purpose or kind, run_id=run_id)


def run_id_for(kind: str, run_id: str | None, resume: bool) -> str:
    """The id of the run to open: the existing run's when resuming, else the given or a new one."""
    return load_run(run_id).id if resume else (run_id or new_run_id(kind))


def written_with(ck: Checkpoint, cfg) -> bool:
    """Whether a checkpoint was written with this config (its stored config read as today's schema, so a
    checkpoint written with a deprecated spelling of the same settings still matches)."""
    if ck.manifest.get("config_sha256") == config_hash(cfg):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return config_hash(validate(type(cfg), ck.config)) == config_hash(cfg)
    except ConfigError:
        return False


def resume_from_checkpoint(run: Run, cfg, trainer: Trainer, load_weights: Callable[[Checkpoint], None]) -> int:
    """Load the newest checkpoint that verifies (weights through `load_weights`, then the optimizer state) and
    return its step; 0 when there is none. Rejected checkpoints and the resume point are logged as events."""
    start = 0
    path, skipped = latest_valid(run.checkpoints_dir)
    for s in skipped:
        run.event("checkpoint_rejected", **s)
    if path is not None:
        ck = load_checkpoint(path)
        if not written_with(ck, cfg):
            raise ZeropointError(f"{path} was written with a different config; resume needs the same config")
        load_weights(ck)
        trainer.load_optimizer_state(ck.optimizer, ck.state["engine"])
        start = ck.step
        run.event("resumed_from", step=start, path=str(path))
    run.truncate_after(start)
    return start


def save_training_state(run: Run, step: int, cfg, trainer: Trainer, *, weights: dict[str, np.ndarray], state: dict,
                        extra_files: dict[str, bytes], weights_kind: str = "model") -> Path:
    """A verified checkpoint of this step: weights, optimizer moments, engine scalars + `state`, the config."""
    arrays, scalars = trainer.optimizer_state()
    return save_checkpoint(run.checkpoints_dir, step, weights=weights, weights_kind=weights_kind, optimizer=arrays,
                           state={"engine": scalars, **state}, config=config_dict(cfg), config_sha256=config_hash(cfg),
                           keep=cfg.train.keep_ckpts, extra_files=extra_files)


def load_arrays(params: dict[str, Tensor], arrays: dict[str, np.ndarray]) -> None:
    """Copy checkpoint arrays into the live tensors (same objects the trainer updates), checking names/shapes."""
    missing, extra = set(params) - set(arrays), set(arrays) - set(params)
    if missing or extra:
        raise ZeropointError(f"checkpoint weights do not match the model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(extra)[:5]}; was it written by another model config?")
    for k, p in params.items():
        if tuple(arrays[k].shape) != tuple(p.shape):
            raise ZeropointError(f"checkpoint weight {k} has shape {arrays[k].shape}, the model expects {p.shape}")
        p.assign(Tensor(np.ascontiguousarray(arrays[k], np.float32))).realize()


def image_batches(images: np.ndarray, targets: Callable[[np.ndarray], np.ndarray], *, micro: int, accum: int, seed: int,
                  crop_pad: int = 0, flip: bool = False) -> Callable[[int], list]:
    """`get_batches(step)` for `engine.fit`: the `accum` micro-batches of optimizer step `step`, each
    (images, targets(indices)); indices and augmentation are pure functions of (seed, micro-batch number), so a
    resumed run sees exactly the batches it would have."""
    def get_batches(step: int) -> list:
        out = []
        for a in range(accum):
            k = step * accum + a
            idx = I.batch_indices(k, micro, len(images), seed)
            xb = images[idx]
            if crop_pad or flip:
                xb = I.augment(xb, I.step_rng(seed, k), crop_pad=crop_pad, flip=flip)
            out.append((xb, targets(idx)))
        return out
    return get_batches


def throughput_summary(hist: list[StepStats], *, steps: int, start: int, wall: float, per_step: int,
                       unit: str) -> dict:
    """Step counts, times and `<unit>_per_s` over the steady steps (the first two compile and capture)."""
    steady = [h.step_s for h in hist[2:]] or [h.step_s for h in hist]
    med = float(np.median(steady)) if steady else None
    return {"steps": steps, "steps_this_session": len(hist), "start_step": start, "train_wall_s": round(wall, 3),
            "first_step_s": round(hist[0].step_s, 3) if hist else None,
            "steady_step_s": round(med, 4) if steady else None,
            f"{unit}_per_s": round(per_step / med, 1) if steady else None,
            "first_loss": hist[0].loss if hist else None, "last_loss": hist[-1].loss if hist else None}


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
