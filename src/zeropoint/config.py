"""Typed configs: YAML -> pydantic models where unknown keys and wrong types are errors.

Every recipe config is a `StrictModel` subclass with a `recipe` field naming it; the recipe table and
`load_config` live in `recipes/__init__.py` (this module knows no recipe).

This module is also the one validation layer for values that enter the appliance from outside (config files,
`--set`, API bodies, job arguments), in two steps, both before anything is stored:
- `check_values(tree, source)`: every number finite, every string valid Unicode, nesting bounded - for the
  whole tree, including the parts no model types (e.g. `model.overrides`), naming the offending key;
- a `StrictModel`: unknown keys refused, non-finite floats refused, and the number types below (`Count`,
  `BatchSize`, `LearningRate`, ...) give each field its type and range.
YAML is read with `load_yaml_text` / `read_yaml`: size, nesting depth and alias expansion are bounded, so a
"billion laughs" document or a 50k-deep list is a `ConfigError`, not a hang.
"""
from __future__ import annotations

import difflib
import math
import warnings
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from .errors import ConfigError
from .hashing import sha256_json

MAX_DEPTH = 64                  # nesting of any config or request body; real configs use 3-4 levels
MAX_CONFIG_BYTES = 1 << 20      # a config file (the API body limit is the same 1 MiB)
MAX_YAML_NODES = 100_000        # values a YAML document may expand to through aliases (real configs: < 1,000)
MAX_COUNT = 10**9               # steps, documents, cadences: far above any real run, far below overflow

# Number types every typed config uses: finite (StrictModel refuses NaN/inf), ranged, and ints are really ints
# (strict: 1e9 from JSON, "5" or true are refused). Floats stay lax so YAML 1.1's `3e-4` (a string) still parses.
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]              # 0 allowed: "off" / "none"
PositiveCount = Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)]
BatchSize = Annotated[int, Strict(), Field(ge=1, le=1 << 16)]
SeqLen = Annotated[int, Strict(), Field(ge=2, le=1 << 20)]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]
LearningRate = Annotated[float, Field(gt=0, le=10)]
Fraction = Annotated[float, Field(ge=0, le=1)]
SplitFraction = Annotated[float, Field(ge=0, lt=1)]                       # a held-out share: some data must remain
NonNegative = Annotated[float, Field(ge=0, le=1e6)]                      # weight decay, grad clip (0 = off), smoothing
LossScale = Annotated[float, Field(gt=0, le=2.0**40)]
Epochs = Annotated[float, Field(gt=0, le=1e6)]                          # passes over the data (fractions allowed)
AdamBeta = Annotated[float, Field(ge=0, lt=1)]
AdamEps = Annotated[float, Field(gt=0, le=1)]
DatasetName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]   # governance.manifest.NAME_RE


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


def _where(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def check_values(tree: Any, source: str = "<input>", *, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a tree holding a non-finite number, a string that is not valid Unicode (a lone UTF-16 surrogate,
    which cannot be stored as UTF-8) or nesting deeper than `max_depth`; the error names the key."""
    stack = [((), tree)]
    while stack:
        path, v = stack.pop()
        if len(path) > max_depth:
            raise ConfigError(f"{source}: {_where(path[:max_depth])} is nested more than {max_depth} levels deep")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{source}: {_where(path)} is {v!r}, not a finite number; give a finite value")
        if isinstance(v, str):
            _check_text(v, source, path)
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str):
                    _check_text(k, source, path + (k,))
                stack.append((path + (k if isinstance(k, (str, int)) else repr(k),), x))
        elif isinstance(v, (list, tuple)):
            stack.extend((path + (i,), x) for i, x in enumerate(v))


def _check_text(s: str, source: str, path: tuple) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(f"{source}: {_where(path)} contains a lone UTF-16 surrogate ({s[e.start]!r}), which is not "
                          "valid Unicode text; send UTF-8 text") from None


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
    if not isinstance(item, str):
        raise ConfigError(f"--set {short_repr(item)}: expected a string key.sub=value (for example --set optim.lr=3e-4)")
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value (for example --set train.lr=3e-4)")
    key, val = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    # the value's finiteness is checked with the whole config (validate), where the error can name the key
    return key.split("."), load_yaml_text(val, f"--set {key}") if val.strip() else ""


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    if overrides is not None and not isinstance(overrides, list):
        raise ConfigError(f"overrides must be a list of key=value strings, not {short_repr(overrides)}")
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
        elif e["type"] == "finite_number":
            lines.append(f"  {key}: got {short_repr(e.get('input'))}, not a finite number; give a finite value")
        else:
            lines.append(f"  {key}: {e['msg']} (got {short_repr(e.get('input'))})")
    return "\n".join(lines)


def short_repr(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + f"... ({len(r)} characters)"


def validate(cls: type[BaseModel], raw: dict, source: str = "<config>"):
    check_values(raw, source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of keys to values, not {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source)) from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than MAX_DEPTH while composing (before recursion runs deep)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# libyaml's parser when the PyYAML wheel has it (10x faster; it refuses nesting past 1,000 levels itself, and
# `_expanded_size` holds documents to MAX_DEPTH); otherwise the pure-Python loader with its own depth check
_FastLoader = getattr(yaml, "CSafeLoader", None)


def _expanded_size(root) -> int:
    """How many values the composed YAML graph stands for once aliases are expanded (a shared anchor counts each
    time it is used), without expanding it; a recursive alias, or nesting deeper than MAX_DEPTH, is refused."""
    memo: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple] = [(root, False, 1)]
    while stack:
        node, done, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep")
        key = id(node)
        if done:
            kids = node.value if isinstance(node, yaml.SequenceNode) else \
                [x for kv in node.value for x in kv] if isinstance(node, yaml.MappingNode) else []
            memo[key] = min(1 + sum(memo[id(k)] for k in kids), MAX_YAML_NODES + 1)
            active.discard(key)
            continue
        if key in memo:
            continue
        if key in active:
            raise yaml.YAMLError("an alias refers to the node that contains it (a recursive document)")
        active.add(key)
        stack.append((node, True, depth))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((k, False, depth + 1) for k in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((x, False, depth + 1) for kv in node.value for x in kv)
    return memo[id(root)]


def load_yaml_text(text: str | bytes, source: str = "<yaml>") -> Any:
    """Parse YAML with the safe loader, bounded: at most MAX_CONFIG_BYTES, MAX_DEPTH levels, MAX_YAML_NODES values
    after alias expansion. Any problem is a ConfigError naming `source`."""
    if isinstance(text, bytes):
        text = _decode(text, source)
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is {len(text):,} characters; a config is at most {MAX_CONFIG_BYTES:,}")
    loader = None
    try:
        loader = _FastLoader(text) if _FastLoader else _BoundedLoader(text)   # refuses control characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_NODES:,} values (a 'billion laughs' "
                                 "document?); write the values out instead")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        why = f"nested more than {MAX_DEPTH} levels deep" if "maximum nesting depth" in str(e) else e   # libyaml's words
        raise ConfigError(f"{source} is not valid YAML: {why}") from None
    except (ValueError, TypeError, RecursionError) as e:   # e.g. an int of 5,000 digits, an unhashable key
        raise ConfigError(f"{source} is not a usable YAML config: {type(e).__name__}: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source} is not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r}); save it "
                          "as UTF-8") from None


def read_yaml(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass a YAML file such as configs/llm/tiny_full.yaml")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    raw = load_yaml_text(_decode(data, f"config file {path}"), f"config file {path}")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values, not a {type(raw).__name__}")
    check_values(raw, f"config file {path}")
    return raw


def config_dict(cfg: BaseModel) -> dict:
    return cfg.model_dump(mode="json")


def config_hash(cfg: BaseModel) -> str:
    return sha256_json(config_dict(cfg))
