"""Scope controls: no mock, flag or simulated device is ever passed off as real compute.

Compute commands call `require_real_compute()` before touching data or a device. It refuses when a mock
flag is set in the environment or the tinygrad device is simulated (NULL, PYTHON), unless the caller was
given `--allow-simulated`, in which case the run is stamped `simulated: true` in its evidence.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tinygrad import Device

from .errors import ScopeError

MOCK_FLAGS = ("ZP_MOCK", "MOCKS_ENABLED", "MOCK_MODE", "SYNTHETIC_MODE")
SIMULATED_DEVICES = ("NULL", "PYTHON")
TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}


def is_true(value) -> bool:
    if isinstance(value, bool): return value
    if isinstance(value, (int, float)): return value != 0
    return str(value).strip().strip("'\"").lower() in TRUE_WORDS


def mock_flags_set(environ=None) -> list[str]:
    env = os.environ if environ is None else environ
    return [f for f in MOCK_FLAGS if f in env and is_true(env[f])]


def device_name() -> str:
    """The default tinygrad device, e.g. 'CPU', 'CUDA', 'NULL'. Importing tinygrad is cheap; opening it is not."""
    return Device.DEFAULT


def device_is_simulated(dev: str | None = None) -> bool:
    dev = (dev or device_name()).split(":")[0].upper()
    return dev in SIMULATED_DEVICES


@dataclass(frozen=True)
class Scope:
    simulated: bool
    reasons: tuple[str, ...]   # why the run counts as simulated (empty when real)
    device: str


def require_real_compute(allow_simulated: bool = False) -> Scope:
    """Refuse compute on mocks or simulated devices unless explicitly allowed; say which in the result."""
    reasons = [f"mock flag {f} is set" for f in mock_flags_set()]
    dev = device_name()
    if device_is_simulated(dev):
        reasons.append(f"tinygrad device {dev} is simulated (computes nothing real)")
    if reasons and not allow_simulated:
        raise ScopeError("refusing to compute: " + "; ".join(reasons) +
                         ". Unset the flag / choose a real device (DEV=CPU), or pass --allow-simulated to run "
                         "anyway with the run stamped SIMULATED.")
    return Scope(simulated=bool(reasons), reasons=tuple(reasons), device=dev)


# ---- scanning config trees for mock flags ----------------------------------------------------------------
CONFIG_SUFFIXES = {".yaml", ".yml", ".toml", ".json", ".env", ".ini", ".cfg"}
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", "runs", "build", "dist",
             ".assets", ".zp-demo", "test-artifacts"}   # fetched third-party data and appliance output, not config
_FLAG_RE = re.compile(r"""["']?(%s)["']?[^\S\n]*[:=][^\S\n]*([^,}\n#]+)""" % "|".join(MOCK_FLAGS), re.IGNORECASE)


@dataclass(frozen=True)
class ScopeHit:
    file: str
    line: int
    key: str
    value: str


def _is_config_file(p: Path) -> bool:
    return p.suffix.lower() in CONFIG_SUFFIXES or p.name == ".env" or p.name.startswith(".env.")


def _config_files(root: Path) -> list[Path]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS]          # prune: never descend into skipped trees
        out += [Path(d) / f for f in files if _is_config_file(Path(f))]
    return sorted(out)


def scan_tree(root: Path | str) -> list[ScopeHit]:
    """Find mock flags set to a true value in YAML/TOML/JSON/.env files under root (line-based, so hits carry lines)."""
    root = Path(root)
    paths = [root] if root.is_file() else _config_files(root)
    hits = []
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        # one regex pass over the whole file (JSON puts several "KEY": value pairs on one line); line from offset
        for m in _FLAG_RE.finditer(text):
            key, val = m.group(1), m.group(2).strip()
            if is_true(val):
                hits.append(ScopeHit(str(p), text.count("\n", 0, m.start()) + 1, key.upper(), val))
    return hits


def hits_json(hits: list[ScopeHit]) -> str:
    return json.dumps([h.__dict__ for h in hits], indent=2)
