"""The recipe table: name -> (typed config class, entry point). Each recipe is one readable script in this
package, its YAML beside it under `configs/`.

    cfg, run = load_config("configs/llm/tiny_lora.yaml", ["train.steps=10"])
    run(cfg)
"""
from __future__ import annotations

from pathlib import Path

from ..config import apply_overrides, read_yaml, validate
from ..errors import ConfigError
from . import clip_contrastive, llm_finetune, vit_classify

RECIPES = {
    "llm_finetune": (llm_finetune.LLMFinetuneConfig, llm_finetune.run),
    "vit_classify": (vit_classify.ViTClassifyConfig, vit_classify.run),
    "clip_contrastive": (clip_contrastive.CLIPContrastiveConfig, clip_contrastive.run),
}


def recipe_entry(name: str):
    """(config class, run function) of a recipe name."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def load_config(path: Path | str, overrides: list[str] | None = None):
    """Load a recipe YAML into its typed config. Returns (config object, recipe run function)."""
    raw = apply_overrides(read_yaml(path), overrides)
    name = raw.get("recipe")
    if not name:
        raise ConfigError(f"config {path} has no 'recipe' key; add e.g. 'recipe: llm_finetune'")
    cls, run_fn = recipe_entry(name)
    return validate(cls, raw, str(path)), run_fn
