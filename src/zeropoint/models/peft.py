"""PEFT LoRA adapter directories in and out: `adapter_model.safetensors` + `adapter_config.json`, as
`peft.PeftModel.from_pretrained(base, dir)` writes and reads them.

PEFT names a tensor by the path of the module inside `PeftModel` (`base_model.model.` + the HF name of the
projection) with the adapter name left out on disk: `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
Our adapters already carry the HF part (`models.lora`), so writing is a prefix and reading strips it. PEFT's
scaling is lora_alpha / r, ours alpha / rank: the same number. Adapters whose maths differs from ours
(rsLoRA, DoRA, per-layer rank or alpha patterns, fan-in/fan-out layouts, trained biases) are refused by name
rather than loaded into the wrong function.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ZeropointError
from ..workspace import atomic_write_text
from .hf import read_safetensors, write_safetensors
from .lora import TARGETS, LoRASpec, load_adapters

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
# named models whose Hugging Face id an adapter can name as its base (the hub id users load the base from)
HF_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
          "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


class PeftFormatError(ZeropointError):
    pass


def peft_config(lora: LoRASpec, base_model: str) -> dict:
    """adapter_config.json for `peft.LoraConfig` (every field spelled out, so nothing depends on PEFT's defaults)."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": sorted(lora.expanded_targets()), "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
            "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
            "revision": None}


def write_peft_adapter(adapters: dict[str, np.ndarray], lora: LoRASpec, base_model: str, out: str | Path) -> Path:
    """Write the two files of a PEFT adapter into `out` (created if needed; other files there, such as an export
    manifest, are left alone), each through a temp file renamed into place; -> `out`."""
    out = Path(out)
    if any((out / f).exists() for f in (ADAPTER_WEIGHTS, ADAPTER_CONFIG)):
        raise PeftFormatError(f"{out} already holds a PEFT adapter; choose a new directory (nothing was overwritten)")
    if bad := [k for k in adapters if not (k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight"))]:
        raise PeftFormatError(f"not LoRA adapter tensors: {bad[:3]}")
    tensors = {PEFT_PREFIX + k: (np.ascontiguousarray(v, np.float32), "F32") for k, v in adapters.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / f".{ADAPTER_WEIGHTS}.tmp", tensors, {"format": "pt"})
    os.replace(out / f".{ADAPTER_WEIGHTS}.tmp", out / ADAPTER_WEIGHTS)
    atomic_write_text(out / ADAPTER_CONFIG, json.dumps(peft_config(lora, base_model), indent=2) + "\n")
    return out


def read_peft_adapter(path: str | Path) -> tuple[dict[str, np.ndarray], LoRASpec, dict]:
    """-> (project-named adapter arrays, the LoRASpec they were trained with, adapter_config.json as read)."""
    path = Path(path)
    cfg_path, w_path = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg_path.is_file():
        raise PeftFormatError(f"{path} has no {ADAPTER_CONFIG}; a PEFT adapter directory holds {ADAPTER_CONFIG} and "
                              f"{ADAPTER_WEIGHTS}")
    if not w_path.is_file():
        hint = " (adapter_model.bin is pickle and is never loaded: save it with safe_serialization=True)" \
            if (path / "adapter_model.bin").exists() else ""
        raise PeftFormatError(f"{path} has no {ADAPTER_WEIGHTS}{hint}")
    try:
        c = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PeftFormatError(f"{cfg_path} is not valid JSON ({e})") from None
    if c.get("peft_type") != "LORA":
        raise PeftFormatError(f"{cfg_path}: peft_type is {c.get('peft_type')!r}; only LORA adapters are supported")
    unsupported = [k for k, ok in (("use_rslora", not c.get("use_rslora")), ("use_dora", not c.get("use_dora")),
                                   ("rank_pattern", not c.get("rank_pattern")), ("alpha_pattern", not c.get("alpha_pattern")),
                                   ("fan_in_fan_out", not c.get("fan_in_fan_out")),
                                   ("bias", c.get("bias", "none") == "none"),
                                   ("modules_to_save", not c.get("modules_to_save")),
                                   ("layers_to_transform", c.get("layers_to_transform") is None)) if not ok]
    if unsupported:
        raise PeftFormatError(f"{cfg_path} sets {', '.join(unsupported)}: that adapter computes something plain LoRA "
                              "does not; only plain LoRA adapters can be loaded")
    targets = c.get("target_modules")
    if not isinstance(targets, list) or not targets or any(t not in TARGETS for t in targets):
        raise PeftFormatError(f"{cfg_path}: target_modules {targets!r} must be a list of projection names from "
                              f"{', '.join(TARGETS)} (regular expressions are not supported)")
    try:
        spec = LoRASpec(rank=int(c["r"]), alpha=float(c["lora_alpha"]), dropout=float(c.get("lora_dropout", 0.0)),
                        targets=list(targets))
    except KeyError as e:
        raise PeftFormatError(f"{cfg_path} lacks {e.args[0]!r}") from None
    arrays = {}
    for k, v in read_safetensors(w_path).items():
        if not k.startswith(PEFT_PREFIX):
            raise PeftFormatError(f"{w_path}: tensor {k} does not start with {PEFT_PREFIX!r}; not a PEFT causal-LM "
                                  "adapter")
        name = k[len(PEFT_PREFIX):].replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        arrays[name] = v
    return arrays, spec, c


def init_adapters_from_peft(model, path: str | Path, lora: LoRASpec) -> dict:
    """Start a LoRA-wrapped model's adapters from a PEFT adapter directory (training that continues an adapter
    made elsewhere). Its r, lora_alpha and target modules must be the run's own: -> adapter_config.json."""
    arrays, spec, c = read_peft_adapter(path)
    mine = (lora.rank, float(lora.alpha), sorted(lora.expanded_targets()))
    theirs = (spec.rank, float(spec.alpha), sorted(spec.expanded_targets()))
    if mine != theirs:
        raise PeftFormatError(f"PEFT adapter {path} has r={theirs[0]} lora_alpha={theirs[1]:g} targets={theirs[2]}, "
                              f"but this run's lora section says rank={mine[0]} alpha={mine[1]:g} targets={mine[2]}; "
                              "set lora.rank, lora.alpha and lora.targets to the adapter's")
    load_adapters(model, arrays)
    return c
