"""Probe packs: YAML files beside this module, one per family, each prompt tagged with its goal.

A probe becomes a `Probe`: chat messages (optional system prompt, few-shot turns, the user prompt) or a raw
text prefix (`raw: true`, for prefix-completion probes like canaries), the detectors that score it and the
strings they look for. Obfuscated payloads are encoded here, at load time, so the packs stay readable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...errors import ZeropointError
from ..detectors import DETECTORS
from ..encodings import encode

PACK_DIR = Path(__file__).resolve().parent
FAMILIES = ("jailbreak", "injection", "sysprompt", "exfil", "pii")
PROBE_KEYS = {"id", "goal", "prompt", "system", "few_shot", "encoding", "payload", "triggers", "detectors", "quick",
              "raw", "meta"}

@dataclass(frozen=True)
class Probe:
    id: str                          # "family.name", unique across packs
    family: str
    goal: str
    messages: tuple = ()             # ({"role": ..., "content": ...}, ...) sent through the chat template
    raw: str | None = None           # prefix-completion probes bypass the chat template
    detectors: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()   # strings whose appearance means the attack worked
    quick: bool = False
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def prompt_text(self) -> str:
        return self.raw if self.raw is not None else self.messages[-1]["content"]


def _probe_from_entry(e: dict, family: str, source: str) -> Probe:
    if not isinstance(e, dict) or "id" not in e or "prompt" not in e:
        raise ZeropointError(f"probe pack {source}: every probe needs at least 'id' and 'prompt' (got {e!r:.120})")
    unknown = set(e) - PROBE_KEYS
    if unknown:
        raise ZeropointError(f"probe pack {source}: probe {e['id']!r} has unknown keys {sorted(unknown)}; "
                             f"known keys: {', '.join(sorted(PROBE_KEYS))}")
    if not e.get("detectors"):
        raise ZeropointError(f"probe pack {source}: probe {e['id']!r} names no detectors")
    bad = [d for d in e["detectors"] if d not in DETECTORS]
    if bad:
        raise ZeropointError(f"probe pack {source}: probe {e['id']!r} uses unknown detectors {bad}; "
                             f"known: {', '.join(sorted(DETECTORS))}")
    prompt = str(e["prompt"])
    meta = dict(e.get("meta") or {})
    if e.get("encoding"):
        if "payload" not in e:
            raise ZeropointError(f"probe pack {source}: probe {e['id']!r} has an encoding but no payload")
        meta.update(encoding=e["encoding"], payload=e["payload"])
        prompt = prompt.replace("{payload}", encode(str(e["payload"]), e["encoding"]))
    messages: list[dict] = []
    if not e.get("raw"):
        if e.get("system"):
            messages.append({"role": "system", "content": str(e["system"]).strip()})
            meta["system"] = messages[0]["content"]
        for pair in e.get("few_shot") or []:
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        messages.append({"role": "user", "content": prompt})
    return Probe(id=f"{family}.{e['id']}", family=family, goal=str(e.get("goal", "")), messages=tuple(messages),
                 raw=prompt if e.get("raw") else None, detectors=tuple(e["detectors"]),
                 triggers=tuple(str(t) for t in e.get("triggers") or ()), quick=bool(e.get("quick")), meta=meta)


def load_pack(path: Path | str) -> list[Probe]:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ZeropointError(f"cannot read probe pack {path}: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("probes"), list) or not doc.get("family"):
        raise ZeropointError(f"probe pack {path} must be a mapping with 'family' and a list 'probes'")
    probes = [_probe_from_entry(e, str(doc["family"]), str(path)) for e in doc["probes"]]
    ids = [p.id for p in probes]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ZeropointError(f"probe pack {path}: duplicate probe ids {dup}")
    return probes


def load_family(family: str) -> list[Probe]:
    return load_pack(PACK_DIR / f"{family}.yaml")


def suites() -> dict:
    return yaml.safe_load((PACK_DIR / "suites.yaml").read_text(encoding="utf-8"))


def resolve_suite(name: str) -> tuple[list[Probe], dict]:
    """Suite name, family, `family.id` or YAML path -> (probes, suite settings: generations, max_tokens)."""
    table = suites()
    if name in table and name != "canary":
        s = table[name]
        probes = [p for fam in s["families"] for p in load_family(fam) if p.quick or not s.get("only_quick")]
        return probes, s
    if name in FAMILIES:
        return load_family(name), table["default"]
    fam = name.split(".", 1)[0]
    if fam in FAMILIES:
        hit = [p for p in load_family(fam) if p.id == name]
        if hit:
            return hit, table["default"]
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file():
            raise ZeropointError(f"probe pack {name} not found")
        return load_pack(name), table["default"]
    raise ZeropointError(f"unknown suite {name!r}: use {', '.join(table)}, a family ({', '.join(FAMILIES)}), "
                         f"a probe id such as jailbreak.dan_classic, or a path to a YAML probe pack")
