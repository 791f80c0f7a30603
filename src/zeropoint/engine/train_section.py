"""`TrainSection`: the `train:` section every recipe YAML shares (litgpt's `TrainArgs`). It maps 1:1 onto
`EngineConfig`, so every engine setting is reachable from YAML; recipes extend it with `steps` or `epochs` and
their own defaults.

    class LLMTrain(TrainSection):
        steps: int = 60
    engine_cfg = cfg.train.engine_config(total_steps=cfg.train.steps)
"""
from __future__ import annotations

from dataclasses import fields
from typing import Literal

from pydantic import Field, model_validator

from ..config import (
    AdamBeta,
    AdamEps,
    BatchSize,
    Count,
    Fraction,
    LearningRate,
    LossScale,
    NonNegative,
    PositiveCount,
    Seed,
    StrictModel,
    rename_deprecated,
)
from .trainer import EngineConfig

# old spelling -> current one, accepted for one release with a deprecation message
RENAMED_KEYS = {"batch_size": "micro_batch_size"}


class TrainSection(StrictModel):
    """Engine settings (one field per `EngineConfig` field but `total_steps`), batch shape, checkpoint cadence,
    seed, and where the recipe cuts its model for activation checkpointing. Defaults are the LLM recipe's; a recipe
    redeclares a field to change its default, with the same number type (`config.BatchSize`, `Count`,
    ...): a redeclared field's type replaces this one, range included.

    `activation_checkpointing` is not an `EngineConfig` field: the engine checkpoints whatever `SegmentedLoss` it is
    handed, and only the recipe knows its model's blocks, so the recipe builds that loss from these two keys (a
    recipe whose model cannot be cut refuses any value but none)."""
    micro_batch_size: BatchSize = Field(4, description="samples per micro-batch (one forward/backward)")
    grad_accum: BatchSize = Field(1, description="micro-batches per optimizer step")
    lr: LearningRate = 3.0e-4
    warmup_steps: Count = Field(0, description="linear warm-up from lr/warmup to lr over these steps")
    min_lr_ratio: Fraction = Field(0.1, description="cosine decay ends at lr * min_lr_ratio")
    weight_decay: NonNegative = Field(0.0, description="decoupled (AdamW), matrices only")
    betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.999)
    eps: AdamEps = 1e-8
    grad_clip: NonNegative = Field(1.0, description="max global L2 norm; 0 disables clipping")
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    loss_scale: LossScale = Field(32768.0, description="initial dynamic loss scale (fp16 only)")
    growth_interval: PositiveCount = Field(200, description="good fp16 steps before the loss scale doubles")
    jit: bool = True
    activation_checkpointing: Literal["none", "layers", "every_k"] = Field(
        "none", description="recompute transformer blocks in the backward pass: none, every layer, or k layers at a "
                            "time (every_k); saves activation memory for about one more forward pass")
    activation_checkpointing_k: PositiveCount = Field(2, description="layers per recomputed segment with every_k")
    ckpt_every: Count = Field(100, description="checkpoint every N steps (and always at the last)")
    keep_ckpts: PositiveCount = Field(2, description="newest checkpoints kept")
    seed: Seed = 0

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, raw):
        return rename_deprecated(raw, RENAMED_KEYS, "train")

    def engine_config(self, total_steps: int) -> EngineConfig:
        """The engine's settings: every EngineConfig field comes from this section, `total_steps` from the recipe."""
        return EngineConfig(total_steps=total_steps, **{f.name: getattr(self, f.name) for f in fields(EngineConfig)
                                                          if f.name != "total_steps"})
