"""SHA-256 helpers shared by governance, checkpoints, diagnostics and evidence."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK * 4)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace): what every stored hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sha256_json(obj) -> str:
    return sha256_bytes(canonical_json(obj))


def sha256_tree(root: Path | str) -> tuple[str, list[dict]]:
    """Hash a directory file by file; returns (digest over the sorted listing, per-file entries)."""
    root = Path(root)
    files = []
    for p in sorted(q for q in root.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        files.append({"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)})
    return sha256_json(files), files
