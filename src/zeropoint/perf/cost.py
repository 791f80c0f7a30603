"""Cost of a run from configured prices: $/kWh for energy, $/hour for the hardware (rent or amortisation).

Prices are policy, not measurements, so there are no built-in defaults: they come from `cost.yaml` in the
workspace root (`$ZP_HOME/cost.yaml`), from `--set`-style overrides, or from a file passed explicitly:

    usd_per_kwh: 0.15      # electricity
    usd_per_hour: 2.50     # hardware: cloud price or purchase / amortisation hours

A price that is not configured gives a `null` cost with the reason; energy cost is also `null` while energy
is (no meter), and the hardware part is still reported.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import load_yaml_text
from ..errors import ConfigError
from ..workspace import workspace


class CostPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_kwh: float | None = Field(None, ge=0, description="electricity price, USD per kWh")
    usd_per_hour: float | None = Field(None, ge=0, description="hardware price, USD per wall-clock hour")
    source: str | None = None


def policy_path() -> Path:
    return workspace().root / "cost.yaml"


def load_policy(path: str | Path | None = None, **overrides) -> CostPolicy:
    p = Path(path) if path else policy_path()
    raw: dict = {}
    if p.is_file():
        try:
            raw = load_yaml_text(p.read_bytes(), str(p)) or {}
        except ConfigError as e:
            raise ConfigError(f"{e}; fix it or delete it") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must be a mapping with usd_per_kwh and/or usd_per_hour")
    elif path:
        raise ConfigError(f"cost policy {p} does not exist; create it with usd_per_kwh: and usd_per_hour:")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        pol = CostPolicy(**{k: v for k, v in raw.items() if k != "source"})
    except ValidationError as e:
        raise ConfigError(f"{p}: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']} "
                          "(keys: usd_per_kwh, usd_per_hour, both >= 0)") from None
    pol.source = str(p) if p.is_file() else ("overrides" if overrides else None)
    return pol


def run_cost(policy: CostPolicy, *, wall_s: float, energy_kwh: float | None, tokens: int | None) -> dict:
    """$ for the run and per 1M tokens, split into energy and hardware; null parts carry a reason."""
    reasons = []
    hw = policy.usd_per_hour * wall_s / 3600.0 if policy.usd_per_hour is not None else None
    if hw is None:
        reasons.append(f"usd_per_hour not configured (set it in {policy_path()})")
    en = None
    if policy.usd_per_kwh is None:
        reasons.append(f"usd_per_kwh not configured (set it in {policy_path()})")
    elif energy_kwh is None:
        reasons.append("energy was not metered, so its cost is unknown")
    else:
        en = policy.usd_per_kwh * energy_kwh
    total = None if hw is None and en is None else (hw or 0.0) + (en or 0.0)
    complete = hw is not None and en is not None
    per_m = total / tokens * 1e6 if total is not None and tokens else None
    return {"usd_total": total, "usd_hardware": hw, "usd_energy": en, "usd_per_1m_tokens": per_m,
            "complete": complete, "policy": policy.model_dump(), "reasons": reasons}
