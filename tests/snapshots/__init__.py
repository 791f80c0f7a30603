"""Snapshot tests: `zpctl --help` of every command and the keys of every evidence file, committed before the
architecture change (issue 21) so that any difference it makes shows up as a reviewed diff of these files.

    ZP_UPDATE_SNAPSHOTS=1 python -m pytest ...   # rewrite the snapshot files instead of comparing
"""
from __future__ import annotations

import csv
import difflib
import json
import os
import re
from pathlib import Path

DIR = Path(__file__).resolve().parent
# run / eval / export / release ids carry a UTC timestamp and random hex: the same shape, another name each run
_ID = re.compile(r"\d{8}-\d{6}(-[0-9a-f]{4,})?")
# cache entries and task copies are named by a hash of their inputs (which include config hashes)
_HASH = re.compile(r"[0-9a-f]{12,64}")


def assert_snapshot(name: str, text: str) -> None:
    path = DIR / name
    if os.environ.get("ZP_UPDATE_SNAPSHOTS"):
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no snapshot {path}; run with ZP_UPDATE_SNAPSHOTS=1 to write it"
    want = path.read_text(encoding="utf-8")
    if text != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), f"{name} (committed)",
                                            f"{name} (now)"))
        raise AssertionError(f"snapshot {name} differs (ZP_UPDATE_SNAPSHOTS=1 rewrites it if intended):\n{diff}")


def key_paths(obj, prefix: str = "") -> set[str]:
    """Every key path in a JSON value; list items are merged under `[]`."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            k = "<path>" if "/" in str(k) else k       # keyed by a file path (a temp dir): the shape, not the name
            p = f"{prefix}.{k}" if prefix else str(k)
            out.add(p)
            out |= key_paths(v, p)
    elif isinstance(obj, list):
        for v in obj:
            out |= key_paths(v, f"{prefix}[]")
    return out


def file_keys(path: Path) -> list[str]:
    """The key paths of one evidence file. JSONL rows are grouped by their `event`/`action` field."""
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return ["header: " + ",".join(next(csv.reader(f), []))]
    if path.suffix == ".jsonl":
        groups: dict[str, set[str]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                tag = next((f"{k}={row[k]}" for k in ("event", "action") if isinstance(row, dict) and k in row), "row")
                groups.setdefault(tag, set()).update(key_paths(row))
        return [f"{tag}: {p}" for tag in sorted(groups) for p in sorted(groups[tag])]
    return sorted(key_paths(json.loads(path.read_text(encoding="utf-8"))))


def evidence_keys(root: Path, skip=("tokenizer.json",)) -> str:
    """Key paths of every .json / .jsonl / .csv file under root, by path with ids replaced by <id>."""
    root = Path(root)
    by_file: dict[str, set[str]] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".csv") and f.name not in skip:
            rel = _HASH.sub("<hash>", _ID.sub("<id>", f.relative_to(root).as_posix()))
            by_file.setdefault(rel, set()).update(file_keys(f))
    return "".join(f"== {rel}\n" + "".join(f"  {k}\n" for k in sorted(keys)) for rel, keys in sorted(by_file.items()))
