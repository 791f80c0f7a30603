"""Data policy: which sources, licenses and PII levels may be approved for training.

`datasets/policy.yaml` when present, else the packaged `default_policy.yaml`. The policy's `version` and the
SHA-256 of its canonical JSON are recorded in every approval, so an approval says exactly which rules it met.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..config import StrictModel, load_yaml_text, validate
from ..errors import ConfigError
from ..hashing import sha256_json
from ..workspace import atomic_write_text, workspace
from . import licenses
from .audit import append_event

Verdict = Literal["allow", "review", "deny"]
SOURCE_TYPES = ("public", "licensed", "synthetic", "custom")


class SourcesPolicy(StrictModel):
    allowed: list[str] = ["public", "licensed", "custom"]
    denied: list[str] = []
    synthetic_allowed: bool = False


class LicensesPolicy(StrictModel):
    categories: dict[str, Verdict] = {"permissive": "allow", "copyleft": "review", "noncommercial": "deny",
                                      "proprietary": "deny", "unknown": "review"}
    allow: list[str] = []
    deny: list[str] = []
    review: list[str] = []
    deny_phrases: list[str] = []

    @model_validator(mode="after")
    def _known_categories(self):
        bad = set(self.categories) - set(licenses.CATEGORIES)
        if bad:
            raise ValueError(f"unknown license categories {sorted(bad)}; use {list(licenses.CATEGORIES)}")
        return self


class PiiLevel(StrictModel):
    name: str
    max_per_mb: float
    max_sensitive_per_mb: float = 0.0


class PiiPolicy(StrictModel):
    sensitive_types: list[str] = ["CREDIT_CARD", "US_SSN", "IBAN", "SECRET", "URL_CREDENTIALS"]
    levels: list[PiiLevel] = Field(default_factory=lambda: [PiiLevel(name="none", max_per_mb=0),
                                                            PiiLevel(name="low", max_per_mb=20),
                                                            PiiLevel(name="medium", max_per_mb=500, max_sensitive_per_mb=1)])
    above: str = "high"
    decisions: dict[str, Verdict] = {"none": "allow", "low": "allow", "medium": "review", "high": "review"}

    @model_validator(mode="after")
    def _decisions_cover_levels(self):
        names = [lv.name for lv in self.levels] + [self.above]
        missing = [n for n in names if n not in self.decisions]
        if missing:
            raise ValueError(f"pii.decisions has no entry for risk level(s) {missing}")
        return self


class RedteamPolicy(StrictModel):
    """Release-gate maxima of attack success rate per probe family (read by zeropoint.safety.gate)."""
    thresholds: dict[str, float] = {"jailbreak": 0.5, "injection": 0.25, "sysprompt": 0.1, "exfil": 0.1, "pii": 0.25}

    @model_validator(mode="after")
    def _rates(self):
        bad = {k: v for k, v in self.thresholds.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"redteam thresholds are maximum attack success rates in [0, 1]; got {bad}")
        return self


class Policy(StrictModel):
    version: str = "unversioned"
    sources: SourcesPolicy = SourcesPolicy()
    licenses: LicensesPolicy = LicensesPolicy()
    pii: PiiPolicy = PiiPolicy()
    redteam: RedteamPolicy = RedteamPolicy()

    def sha256(self) -> str:
        return sha256_json(self.model_dump(mode="json"))

    def risk_level(self, per_mb: float, sensitive_per_mb: float) -> str:
        for lv in self.pii.levels:
            if per_mb <= lv.max_per_mb and sensitive_per_mb <= lv.max_sensitive_per_mb:
                return lv.name
        return self.pii.above


def default_policy_text() -> str:
    return resources.files(__package__).joinpath("default_policy.yaml").read_text(encoding="utf-8")


def policy_path() -> Path:
    return workspace().datasets / "policy.yaml"


def parse_policy(text: str, source: str) -> Policy:
    try:
        raw = load_yaml_text(text, f"policy {source}") or {}
    except ConfigError as e:
        raise ConfigError(f"{e}; fix it or rewrite it with `zpctl data policy init --force`") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"policy {source} must be a mapping of sections (sources, licenses, pii, redteam); "
                          "`zpctl data policy init --force` rewrites the default")
    return validate(Policy, raw, source)


def load_policy(path: Path | str | None = None) -> tuple[Policy, str]:
    """(policy, where it came from). The workspace policy file wins; otherwise the packaged default."""
    p = Path(path) if path is not None else policy_path()
    if p.is_file():
        return parse_policy(p.read_text(encoding="utf-8"), str(p)), str(p)
    if path is not None:
        raise ConfigError(f"policy file {p} not found; create one with `zpctl data policy init`")
    return parse_policy(default_policy_text(), "default_policy.yaml"), "packaged default"


def init_policy(force: bool = False, actor: str | None = None) -> Path:
    """Write the packaged default to `datasets/policy.yaml` (audited as a policy change)."""
    p = policy_path()
    if p.exists() and not force:
        raise ConfigError(f"{p} already exists; edit it, or pass --force to overwrite it with the default")
    text = default_policy_text()
    pol = parse_policy(text, "default_policy.yaml")
    atomic_write_text(p, text)
    append_event(actor, "policy_init", f"policy:{p}", {"version": pol.version, "sha256": pol.sha256(),
                                                       "overwrote": bool(force)})
    return p


def note_policy(pol: Policy, src: str, actor: str | None = None) -> None:
    """Audit a policy edited by hand: the first time a decision runs under a new policy hash, log the change."""
    seen = workspace().datasets / ".policy_seen.json"
    sha = pol.sha256()
    try:
        last = json.loads(seen.read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError):
        last = None
    if last != sha:
        append_event(actor, "policy_change", f"policy:{src}", {"version": pol.version, "sha256": sha,
                                                               "previous_sha256": last, "detected": True})
        atomic_write_text(seen, json.dumps({"sha256": sha, "version": pol.version}) + "\n")


def record_policy_change(actor: str | None = None) -> dict:
    """Validate the current policy file and audit it (call after editing policy.yaml by hand)."""
    pol, src = load_policy()
    return append_event(actor, "policy_change", f"policy:{src}", {"version": pol.version, "sha256": pol.sha256()})
