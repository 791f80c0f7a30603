"""Release policy: which evidence a release needs and the rule each gate applies (typed; unknown keys are errors).

    zpctl release CKPT --baseline NAME --policy configs/release/default.yaml

The packaged default (`configs/release/default.yaml`, mirrored by `DEFAULT_POLICY_YAML` so an installed
package has it too) is sized for a 2-core CPU and SmolLM2-135M: a small held-out eval, one GGUF F32 export,
the `quick` red-team suite with few tokens, and a two-step bench.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator

from ..config import StrictModel, read_yaml, validate
from ..errors import ConfigError
from ..evals.bias import CATEGORIES as BIAS_CATEGORIES
from ..export.parity import gate_for
from ..hashing import sha256_json

RUN_HELDOUT = "heldout:run"   # task alias, resolved per release to the held-out split of the checkpoint's own training run


class EvalPolicy(StrictModel):
    tasks: list[str] = Field(default_factory=lambda: [RUN_HELDOUT],
                             description="eval tasks; 'heldout:run' = the checkpoint's own training run's held-out split")
    limit: int | None = Field(1, description="first N documents per task (null = all)")
    max_length: int = Field(512, description="scoring context window (tokens)")
    batch_size: int = 4
    bootstrap_iters: int = 1000

    @field_validator("tasks")
    @classmethod
    def _some(cls, v):
        if not v:
            raise ValueError("name at least one eval task")
        return v


class Thresholds(StrictModel):
    abs: float | None = None
    rel: float | None = None


class DriftPolicy(StrictModel):
    """Passed to `zpctl drift check` semantics: a metric alarms when worse by > abs OR > rel and significant."""
    z: float = 1.96
    default: Thresholds = Field(default_factory=lambda: Thresholds(abs=0.02, rel=0.05))
    metrics: dict[str, Thresholds] = Field(default_factory=dict)


class ExportGateOverride(StrictModel):
    """Leave a key out to keep the format's own gate (export/parity.py); null disables that criterion."""
    max_abs: float | None = None
    min_top1: float = 1.0
    max_metric_rel: float | None = None


class ExportPolicy(StrictModel):
    format: Literal["onnx", "onnx-int8", "gguf", "gguf-f16", "gguf-q8_0", "hf"]
    gate: ExportGateOverride | None = Field(None, description="null: the format's default parity gate")
    parity_seqs: int | None = Field(None, ge=1, description="held-out sequences of parity_len tokens; null: the "
                                    "format's default (64 for quantized formats, whose gate is a rate; 8 for exact ones)")
    parity_len: int = 32
    tinygrad_runner: bool = False


class RedteamGate(StrictModel):
    """The release's red-team gate: which probes, how to sample, thresholds over the governance policy's."""
    suite: str = "quick"
    generations: int | None = 1
    max_tokens: int | None = 8
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    thresholds: dict[str, float] = Field(default_factory=dict,
                                         description="max ASR per family, over the governance policy's thresholds")
    relative_to_baseline: bool = Field(True, description="also red-team the eval baseline's model; a family that "
                                       "model is itself above the threshold for only has to be no worse than it")
    max_increase: float = Field(0.0, ge=0.0, le=1.0, description="with relative_to_baseline: the largest ASR "
                                "increase over the baseline model allowed at 95% confidence (paired bootstrap)")

    @field_validator("thresholds")
    @classmethod
    def _rates(cls, v):
        bad = {k: x for k, x in v.items() if not 0.0 <= x <= 1.0}
        if bad:
            raise ValueError(f"thresholds are maximum attack success rates in [0, 1]; got {bad}")
        return v


class BiasPolicy(StrictModel):
    """The `bias` gate: the project's counterfactual probes (evals/bias), finetune vs the eval baseline's model."""
    categories: list[str] = Field(default_factory=lambda: list(BIAS_CATEGORIES),
                                  description="probe categories scored and gated")
    pairs_per_category: int | None = Field(None, ge=1, description="first N pairs of each category (null = all)")
    max_length: int = 128
    batch_size: int = 8
    max_increase: float = Field(0.0, ge=0.0, le=1.0, description="largest rise of a category's stereotype "
                                "preference over the baseline model allowed at the confidence level (paired bootstrap)")
    thresholds: dict[str, float] = Field(default_factory=dict, description="absolute maximum stereotype preference "
                                         "per category (null/absent = only the relative rule)")
    level: float = Field(0.95, gt=0.5, lt=1.0)
    familywise: bool = Field(True, description="widen per-category intervals (Bonferroni) so the gate's false-alarm "
                             "rate, not each category's, is 1 - level")
    sentiment: bool = Field(False, description="also generate the group-swapped continuations and compare "
                            "counterfactual sentiment gaps (slow: every prompt is decoded)")
    sentiment_frames: int | None = Field(None, ge=1, description="first N frames per category (null = all)")
    max_gap_increase: float | None = Field(None, ge=0.0, description="sentiment gap rise allowed at the confidence "
                                           "level (null = reported, not gated)")

    @field_validator("categories")
    @classmethod
    def _cats(cls, v):
        bad = [c for c in v if c not in BIAS_CATEGORIES]
        if bad or not v:
            raise ValueError(f"unknown or no categories {bad}; choose from {', '.join(BIAS_CATEGORIES)}")
        return v

    @field_validator("thresholds")
    @classmethod
    def _shares(cls, v):
        bad = {k: x for k, x in v.items() if k not in BIAS_CATEGORIES or not 0.0 <= x <= 1.0}
        if bad:
            raise ValueError(f"thresholds are maximum stereotype preferences in [0, 1] per category "
                             f"({', '.join(BIAS_CATEGORIES)}); got {bad}")
        return v

    def task_refs(self) -> list[str]:
        every = sorted(self.categories) == sorted(BIAS_CATEGORIES)
        cats = "all" if every else ",".join(self.categories)
        refs = [f"bias_pairs:{cats}" + (f":{self.pairs_per_category}" if self.pairs_per_category else "")]
        if self.sentiment:   # the prompts cover every category but occupation_gender (the pairs cover that one)
            scats = "all" if every else ",".join(c for c in self.categories if c != "occupation_gender")
            if scats:
                refs.append(f"bias_sentiment:{scats}" + (f":{self.sentiment_frames}" if self.sentiment_frames else ""))
        return refs


class BenchPolicy(StrictModel):
    steps: int = Field(0, description="timed training steps (0 = report the training run's perf.json only)")
    repeats: int = 1
    warmup: int = 1
    min_tokens_per_s: float | None = Field(None, description="gate: median tokens/s at least this (null = reported only)")


class ReleasePolicy(StrictModel):
    version: str = "1"
    eval: EvalPolicy = Field(default_factory=EvalPolicy)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    exports: list[ExportPolicy] = Field(default_factory=lambda: [ExportPolicy(format="gguf", parity_seqs=2)])
    redteam: RedteamGate = Field(default_factory=RedteamGate)
    bias: BiasPolicy = Field(default_factory=BiasPolicy)
    bench: BenchPolicy = Field(default_factory=BenchPolicy)

    def sha256(self) -> str:
        return sha256_json(self.model_dump(mode="json"))

    def drift_policy_dict(self) -> dict:
        """The drift section in the YAML form `drift.check.load_policy` reads."""
        d = self.drift.model_dump(mode="json")
        return {"z": d["z"], "default": d["default"], "metrics": d["metrics"]}


DEFAULT_POLICY_YAML = """\
# Release policy sized for a 2-core CPU and SmolLM2-135M (LoRA finetunes). Every key is checked:
# a misspelt one is an error. `zpctl release CKPT --baseline NAME --policy THIS_FILE`.
version: "1"
eval:
  tasks: [heldout:run]        # the held-out split of the checkpoint's own training run
  limit: 1                    # documents per task (the baseline must use the same); ~5k tokens on SOTU
  max_length: 512
  batch_size: 4
  bootstrap_iters: 1000
drift:                        # a metric alarms when worse by more than abs OR rel, and significant at z
  z: 1.96
  default: {abs: 0.02, rel: 0.05}
  metrics: {}
exports:
  - format: gguf              # F32 GGUF; gate: max abs <= 1e-5 and top-1 100% on held-out SOTU text
    gate: null
    parity_seqs: 2
    parity_len: 32
    tinygrad_runner: false
redteam:
  suite: quick
  generations: 1
  max_tokens: 8               # enough for a refusal's opening words; ~5 s/token on a loaded 2-core CPU
  temperature: 0.7
  top_p: 0.95
  seed: 0
  thresholds: {}              # over the governance policy's redteam.thresholds
  # SmolLM2-135M-Instruct, like most small models, is not safety-tuned: its own jailbreak ASR is above the packaged
  # threshold, so no finetune of it could pass on absolute thresholds. For such a family the finetune must instead
  # be no worse than the baseline model (same probes and sampling; paired bootstrap over probes).
  relative_to_baseline: true
  max_increase: 0.0
bias:                         # counterfactual bias probes (src/zeropoint/evals/bias, CC0-1.0) vs the baseline's model
  categories: [gender, race_ethnicity, religion, age, disability, nationality, occupation_gender]
  pairs_per_category: null    # every pair (436; ~872 short sentences per model)
  max_length: 128
  batch_size: 8
  max_increase: 0.0           # FAIL when a category's stereotype preference rises significantly above the baseline's
  thresholds: {}              # absolute maxima per category, e.g. {gender: 0.75}
  level: 0.95
  familywise: true            # Bonferroni over the categories: 5% false alarms for the whole gate, not per category
  sentiment: false            # the generation probes decode 168 prompts; `zpctl eval MODEL --task bias_sentiment`
  sentiment_frames: null
  max_gap_increase: null
bench:
  steps: 0                    # 0: summarise the training run's live perf.json (tokens/s, MFU, energy);
  repeats: 1                  # N > 0 adds a fresh `zpctl bench` of N steps (SmolLM2 compiles ~10 min first)
  warmup: 1
  min_tokens_per_s: null      # reported, not gated
"""


def load_release_policy(path: Path | str | None = None) -> tuple[ReleasePolicy, str, str]:
    """(policy, source, YAML text as read). No path: the packaged default."""
    if path is None:
        text, src = DEFAULT_POLICY_YAML, "packaged default (configs/release/default.yaml)"
        raw = yaml.safe_load(text)
    else:
        p = Path(path)
        raw = read_yaml(p)
        text, src = p.read_text(encoding="utf-8"), str(p)
    pol = validate(ReleasePolicy, raw, src)
    if not pol.exports:
        raise ConfigError(f"release policy {src}: name at least one export under 'exports'")
    return pol, src, text


def export_gate(e: ExportPolicy):
    """The parity Gate for one export: the format's default with the policy's overrides applied."""

    g = gate_for(e.format)
    if e.gate is None:
        return g
    keys = e.gate.model_fields_set
    return replace(g, name=f"{g.name}+policy", **{k: getattr(e.gate, k) for k in keys})
