"""Open any language-model reference the CLI, evals, red-team and release accept, in one place.

A finetune checkpoint directory (manifest.json beside the recipe's config.json) opens through the LLM recipe:
verified file by file, base rebuilt from its config, LoRA adapters merged. Anything else (a named model, a .gguf
file, an HF directory) opens through the model registry. Lives above `models/` and `recipes/` so that lower
layers (evals, safety) can open a checkpoint without importing each other."""
from __future__ import annotations

from pathlib import Path


def is_finetune_checkpoint(ref: str | Path) -> bool:
    p = Path(ref)
    return p.is_dir() and (p / "manifest.json").is_file() and (p / "config.json").is_file() \
        and not (p / "tokenizer.json").exists()


def load_lm(ref: str | Path):
    """-> (model, llama config, tokenizer, info) with `info` saying what was opened."""
    if is_finetune_checkpoint(ref):
        from .recipes.llm_finetune import load_checkpoint_model
        model, cfg, tok, rcfg = load_checkpoint_model(ref, merge=True)
        return model, cfg, tok, {"kind": "checkpoint", "path": str(Path(ref).resolve()), "base": rcfg.model.weights,
                                 "method": rcfg.method}
    from .models.registry import load_model
    model, cfg, tok = load_model(str(ref))
    return model, cfg, tok, {"kind": (getattr(model, "load_info", None) or {}).get("format"), "path": str(ref)}
