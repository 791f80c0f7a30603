"""A tiny LoRA finetune checkpoint written directly (no training run): the byte tokenizer, tiny-untied base from
seed 0, adapters on q/v/lm_head with non-zero random values, saved by the project's own checkpoint writer."""
from pathlib import Path

import numpy as np

from zeropoint.checkpoint import save_checkpoint
from zeropoint.config import config_dict, config_hash
from zeropoint.recipes import load_config


def tiny_lora_checkpoint(root: Path, seed: int = 0) -> Path:
    from zeropoint.models.llm import build_llm, trainable_params
    from zeropoint.recipes.llm_finetune import lora_spec
    cfg, _ = load_config("configs/llm/tiny_lora.yaml")
    lm = build_llm(cfg.model, precision="fp32", seed=cfg.train.seed)
    params = trainable_params(lm.model, "lora", lora_spec(cfg), cfg.train.seed)
    rng = np.random.default_rng(seed)
    weights = {k: (0.05 * rng.standard_normal(p.shape)).astype(np.float32) for k, p in params.items()}
    return save_checkpoint(root, 4, weights=weights, weights_kind="adapter", optimizer={}, state={},
                           config=config_dict(cfg), config_sha256=config_hash(cfg))
