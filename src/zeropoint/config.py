"""Typed configs: YAML -> pydantic models where unknown keys and wrong types are errors.

Every recipe config is a `StrictModel` subclass with a `recipe` field naming it; the recipe table and
`load_config` live in `recipes/__init__.py` (this module knows no recipe).
"""
from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .hashing import sha256_json


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def rename_deprecated(raw, renames: dict, section: str):
    """Rewrite old spellings of a config section's keys to the current ones, with a deprecation message each.
    `renames`: old key -> new key (dotted for a key inside a sub-mapping: "overrides.vision"), or old key ->
    (new key, function turning the old value into the new one). Old spellings are accepted for one release
    (issue 21), then they become unknown keys."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for old, new in renames.items():
        new, convert = new if isinstance(new, tuple) else (new, lambda v: v)
        if old not in out:
            continue
        *parents, leaf = new.split(".")
        node = out
        for p in parents:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        if leaf in node:
            raise ValueError(f"{section}.{old} and {section}.{new} are the same setting; keep only {section}.{new}")
        warnings.warn(f"config key {section}.{old} is deprecated; write {section}.{new} (the old spelling is "
                      "accepted until the next release)", FutureWarning, stacklevel=2)
        node[leaf] = convert(out.pop(old))
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value (for example --set train.lr=3e-4)")
    key, val = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    return key.split("."), yaml.safe_load(val) if val.strip() else ""


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    for item in overrides or []:
        path, val = parse_override(item)
        node = raw
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {} if part not in node else node[part]
                if not isinstance(node[part], dict):
                    raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = node[part]
        node[path[-1]] = val
    return raw


def _known_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names at a nested location, for 'did you mean' hints."""
    model = cls
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(root)"
        if e["type"] == "extra_forbidden":
            known = _known_keys(cls, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else (f" (known keys: {', '.join(known)})" if known else "")
            lines.append(f"  unknown key {key!r}{hint}")
        elif e["type"] == "missing":
            lines.append(f"  missing required key {key!r}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate(cls: type[BaseModel], raw: dict, source: str = "<config>"):
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source)) from None


def read_yaml(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass a YAML file such as configs/llm/tiny_full.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values")
    return raw


def config_dict(cfg: BaseModel) -> dict:
    return cfg.model_dump(mode="json")


def config_hash(cfg: BaseModel) -> str:
    return sha256_json(config_dict(cfg))
