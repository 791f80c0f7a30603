"""The recipe table: name -> (typed config class, entry point). Each recipe is one readable script in this
package, its YAML beside it under `configs/`.

    cfg, run = load_config("configs/llm/tiny_lora.yaml", ["train.steps=10"])
    run(cfg)
    MODEL_INFO[cfg.recipe](cfg)      # sizing without weights (`zpctl model info`)
    model_info(cfg, devices=2)       # the same, plus one device's share under data parallel
"""
from __future__ import annotations

from pathlib import Path

from ..config import apply_overrides, read_yaml, short_repr, validate
from ..engine.parallel import per_device_plan
from ..errors import ConfigError
from . import clip_contrastive, llm_finetune, vit_classify, vlm_finetune

RECIPES = {
    "llm_finetune": (llm_finetune.LLMFinetuneConfig, llm_finetune.run),
    "vit_classify": (vit_classify.ViTClassifyConfig, vit_classify.run),
    "clip_contrastive": (clip_contrastive.CLIPContrastiveConfig, clip_contrastive.run),
    "vlm_finetune": (vlm_finetune.VLMFinetuneConfig, vlm_finetune.run),
}

# `zpctl model info`: parameters, memory plan (and FLOPs for the vision recipes) from a config, no weights loaded
MODEL_INFO = {
    "llm_finetune": llm_finetune.model_info,
    "vit_classify": vit_classify.model_info,
    "clip_contrastive": clip_contrastive.model_info,
    "vlm_finetune": vlm_finetune.model_info,
}
# recipes that train with train.devices > 1 (clip_contrastive's loss compares across the whole batch: not yet)
DATA_PARALLEL = ("llm_finetune", "vit_classify")


def model_info(cfg, devices: int | None = None, shard_optimizer: bool | None = None) -> dict:
    """`zpctl model info`: the recipe's sizing (MODEL_INFO); with `devices`, also `per_device`, one device's share
    of it under data parallel (ZeRO-1 if `shard_optimizer`; default: the config's train.shard_optimizer)."""
    info = MODEL_INFO[cfg.recipe](cfg)
    if devices is not None:
        if devices > 1 and cfg.recipe not in DATA_PARALLEL:
            raise ConfigError(f"{cfg.recipe} does not train on more than one device yet, so it has no per-device "
                              f"plan; --devices works for {', '.join(DATA_PARALLEL)}")
        t = cfg.train
        info["per_device"] = per_device_plan(info["memory"], devices, micro_batch_size=t.micro_batch_size,
                                             shard_optimizer=t.shard_optimizer if shard_optimizer is None
                                             else shard_optimizer,
                                             optimizer_step_detail=info.get("optimizer_step_detail"))
    return info


def recipe_entry(name: str, source: str | None = None):
    """(config class, run function) of a recipe name; `source` (e.g. "config PATH") prefixes the error."""
    where = f"{source}: " if source else ""
    if not isinstance(name, str):
        raise ConfigError(f"{where}'recipe' must be a recipe name such as llm_finetune, not {short_repr(name)}; "
                          f"known recipes: {', '.join(sorted(RECIPES))}")
    if name not in RECIPES:
        raise ConfigError(f"{where}unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def load_config(path: Path | str, overrides: list[str] | None = None):
    """Load a recipe YAML into its typed config. Returns (config object, recipe run function)."""
    raw = apply_overrides(read_yaml(path), overrides)
    name = raw.get("recipe")
    if not name:
        raise ConfigError(f"config {path} has no 'recipe' key; add e.g. 'recipe: llm_finetune'")
    cls, run_fn = recipe_entry(name, f"config {path}")
    return validate(cls, raw, str(path)), run_fn
