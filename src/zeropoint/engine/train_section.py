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

from ..config import StrictModel, rename_deprecated
from .trainer import EngineConfig

# old spelling -> current one, accepted for one release with a deprecation message
RENAMED_KEYS = {"batch_size": "micro_batch_size"}
# where the step runs, not what it computes: a checkpoint resumes under any value of these
PLACEMENT_KEYS = ("devices", "shard_optimizer")


class TrainSection(StrictModel):
    """Engine settings (one field per `EngineConfig` field but `total_steps`), batch shape, checkpoint cadence and
    seed. Defaults are the LLM recipe's; a recipe redeclares a field to change its default."""
    micro_batch_size: int = Field(4, ge=1, description="samples per micro-batch (one forward/backward)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = 3.0e-4
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from lr/warmup to lr over these steps")
    min_lr_ratio: float = Field(0.1, description="cosine decay ends at lr * min_lr_ratio")
    weight_decay: float = Field(0.0, description="decoupled (AdamW), matrices only")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = Field(1.0, description="max global L2 norm; 0 disables clipping")
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    loss_scale: float = Field(32768.0, description="initial dynamic loss scale (fp16 only)")
    growth_interval: int = Field(200, ge=1, description="good fp16 steps before the loss scale doubles")
    jit: bool = True
    devices: int | list[str] = Field(1, description="data parallel: a device count (2) or names ([CUDA:0, CUDA:1]); "
                                                    "the micro-batch is split across them, weights replicated")
    shard_optimizer: bool = Field(False, description="ZeRO-1: partition the fp32 Adam moments across train.devices")
    ckpt_every: int = Field(100, ge=0, description="checkpoint every N steps (and always at the last)")
    keep_ckpts: int = Field(2, ge=1, description="newest checkpoints kept")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, raw):
        return rename_deprecated(raw, RENAMED_KEYS, "train")

    def engine_config(self, total_steps: int) -> EngineConfig:
        """The engine's settings: every EngineConfig field comes from this section, `total_steps` from the recipe."""
        vals = {f.name: getattr(self, f.name) for f in fields(EngineConfig) if f.name != "total_steps"}
        vals["devices"] = vals["devices"] if isinstance(vals["devices"], int) else tuple(vals["devices"])
        return EngineConfig(total_steps=total_steps, **vals)
