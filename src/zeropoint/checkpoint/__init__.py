"""Checkpoints with integrity: written whole or not at all, verified before they are trusted.

A checkpoint is a directory `step-00000020/` holding
- `model.safetensors` (full finetune: every trainable weight) or `adapter.safetensors` (LoRA: adapters only),
- `optimizer.safetensors` (AdamW moments `m.<name>`, `v.<name>`; never the parameters again),
- `state.json` (step, engine scalars, RNG state, data position), `config.json` (the run's typed config),
- `manifest.json`: SHA-256 and size of every other file, the step and the run's config hash.

It is written into a temp directory beside its final place and renamed in one `os.replace`, so a crash leaves
either the previous checkpoints or a complete new one. Loading re-hashes every file against the manifest
first (from the same bytes it then parses) and refuses a tampered or truncated one, naming the file. Every
file's size is checked against the manifest from its metadata before a byte is read, and `verify_checkpoint`
hashes in blocks, so a huge or sparse file costs neither memory nor a full read to refuse.
No pickle anywhere: tensors are safetensors, everything else JSON.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load, save

from ..errors import ZeropointError
from ..hashing import sha256_bytes, sha256_file
from ..workspace import atomic_dir

FORMAT = "zeropoint-checkpoint/1"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(ZeropointError):
    """A checkpoint is missing, incomplete or does not match its manifest."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    manifest: dict
    weights: dict[str, np.ndarray]          # model or adapter tensors
    weights_kind: str                       # "model" | "adapter"
    optimizer: dict[str, np.ndarray]
    state: dict                             # engine scalars, rng, data position
    config: dict
    extra: dict[str, bytes] = field(default_factory=dict)   # other verified files (e.g. adapter_config.json)


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _st_save(arrays: dict[str, np.ndarray]) -> bytes:
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def _st_load(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        return load(data)
    except Exception as e:   # the hash matched, so this is a writer bug or a foreign file: say which file
        raise CheckpointError(f"{name} is not a valid safetensors file ({e})") from None


def save_checkpoint(root: Path, step: int, *, weights: dict[str, np.ndarray], weights_kind: str = "model",
                    optimizer: dict[str, np.ndarray], state: dict, config: dict, config_sha256: str,
                    extra_files: dict[str, bytes] | None = None, keep: int = 0) -> Path:
    """Write checkpoint `root/step-XXXXXXXX` atomically; then delete all but the newest `keep` (0 keeps all)."""
    if weights_kind not in ("model", "adapter"):
        raise ValueError(f"weights_kind must be 'model' or 'adapter', not {weights_kind!r}")
    root = Path(root)
    final = root / step_dir_name(step)
    if final.exists():   # re-saving the same step (a resumed run that re-reached it): replace it whole
        shutil.rmtree(final)
    files: dict[str, bytes] = {
        f"{weights_kind}.safetensors": _st_save(weights),
        "optimizer.safetensors": _st_save(optimizer),
        "state.json": (json.dumps({"step": step, **state}, indent=2, sort_keys=True, default=float) + "\n").encode(),
        "config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        **(extra_files or {}),
    }
    manifest = {"format": FORMAT, "step": step, "config_sha256": config_sha256, "weights": f"{weights_kind}.safetensors",
                "files": [{"path": n, "size": len(b), "sha256": sha256_bytes(b)} for n, b in sorted(files.items())]}
    with atomic_dir(final) as tmp:
        for n, b in files.items():
            with open(tmp / n, "wb") as f:
                f.write(b)
                f.flush()
                os.fsync(f.fileno())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoint dirs under root, oldest first (temp dirs start with '.' and are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)), key=lambda p: p.name)


def _read_manifest(path: Path) -> dict:
    mp = path / MANIFEST
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    if not mp.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST}; the checkpoint is incomplete - use an earlier one")
    try:
        man = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{mp}: manifest is not valid JSON ({e}); the checkpoint is corrupt") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT or not isinstance(man.get("files"), list):
        raise CheckpointError(f"{mp}: not a {FORMAT} manifest")
    seen = set()
    for i, ent in enumerate(man["files"]):
        p = ent.get("path", "") if isinstance(ent, dict) else ""
        if not isinstance(p, str) or not p or "/" in p or "\\" in p or p.startswith(".") or p == MANIFEST:
            raise CheckpointError(f"{mp}: manifest lists an invalid path {p!r}; the checkpoint is corrupt")
        if p in seen:
            raise CheckpointError(f"{mp}: {p} is listed twice in the manifest; the checkpoint is corrupt")
        seen.add(p)
        size, digest = ent.get("size"), ent.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CheckpointError(f"{mp}: the entry for {p} has no valid size ({size!r}); the checkpoint is corrupt")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise CheckpointError(f"{mp}: the entry for {p} has no valid sha256 ({digest!r}); the checkpoint is corrupt")
    return man


def _check_listing(path: Path, man: dict) -> dict[str, dict]:
    """Manifest entries by name, after checking that every listed file exists with its recorded size (metadata
    only) and that no unlisted file is present."""
    listed = {e["path"]: e for e in man["files"]}
    present = {p.name for p in path.iterdir() if p.is_file() and p.name != MANIFEST}
    if unexpected := sorted(present - set(listed)):
        raise CheckpointError(f"{path}: file {unexpected[0]} is not in the manifest; refusing a modified checkpoint")
    for name, ent in sorted(listed.items()):
        fp = path / name
        if not fp.is_file():
            raise CheckpointError(f"{path}: {name} is listed in the manifest but missing")
        if (size := fp.stat().st_size) != ent["size"]:
            raise CheckpointError(f"{fp}: size {size} != {ent['size']} in the manifest; file is truncated or modified")
    return listed


def _verified_bytes(path: Path, man: dict) -> dict[str, bytes]:
    listed = _check_listing(path, man)
    out = {}
    for name, ent in sorted(listed.items()):
        fp = path / name
        data = fp.read_bytes()
        if len(data) != ent["size"]:
            raise CheckpointError(f"{fp}: size {len(data)} != {ent['size']} in the manifest; file is truncated or modified")
        if sha256_bytes(data) != ent["sha256"]:
            raise CheckpointError(f"{fp}: SHA-256 does not match the manifest; the file was modified or corrupted")
        out[name] = data
    return out


def verify_checkpoint(path: Path | str) -> dict:
    """Re-hash every file against the manifest. Returns a report dict; raises CheckpointError on any mismatch."""
    path = Path(path)
    man = _read_manifest(path)
    listed = _check_listing(path, man)          # sizes from metadata first: nothing is read yet
    for name, ent in sorted(listed.items()):    # then hashes, streamed in blocks
        fp = path / name
        if sha256_file(fp) != ent["sha256"]:
            raise CheckpointError(f"{fp}: SHA-256 does not match the manifest; the file was modified or corrupted")
    return {"path": str(path), "step": man.get("step"), "config_sha256": man.get("config_sha256"), "ok": True,
            "files": [{"path": e["path"], "size": e["size"], "sha256": e["sha256"]} for e in man["files"]],
            "bytes": sum(e["size"] for e in man["files"])}


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Verify, then parse. A tampered file is refused before any of it is used."""
    path = Path(path)
    man = _read_manifest(path)
    data = _verified_bytes(path, man)
    wname = man.get("weights", "model.safetensors")
    for need in (wname, "optimizer.safetensors", "state.json", "config.json"):
        if need not in data:
            raise CheckpointError(f"{path}: {need} is missing from the manifest; not a training checkpoint")
    state = json.loads(data["state.json"])
    return Checkpoint(path=path, step=int(man["step"]), manifest=man, weights=_st_load(data[wname], wname),
                      weights_kind=wname.split(".")[0], optimizer=_st_load(data["optimizer.safetensors"], "optimizer.safetensors"),
                      state=state, config=json.loads(data["config.json"]),
                      extra={k: v for k, v in data.items() if k not in (wname, "optimizer.safetensors", "state.json", "config.json")})


def latest_valid(root: Path | str) -> tuple[Path | None, list[dict]]:
    """Newest checkpoint under root that verifies, plus the ones skipped on the way and why."""
    skipped = []
    for p in reversed(list_checkpoints(Path(root))):
        try:
            verify_checkpoint(p)
            return p, skipped
        except CheckpointError as e:
            skipped.append({"path": str(p), "error": str(e)})
    return None, skipped


__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "verify_checkpoint",
           "list_checkpoints", "latest_valid", "step_dir_name"]
