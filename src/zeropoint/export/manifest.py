"""The export manifest: `exports/<export_id>/manifest.json`, next to every artifact.

Source (reference and SHA-256 of the checkpoint file or tree), format, opset, quantization, parity figures and
gate, SHA-256 and size of every artifact file, tool versions, status (running / succeeded / failed). Rewritten
atomically at each stage, so a crash leaves `running` with what was done so far, never a half-written file.
`verify_manifest` re-hashes the artifact files before anything trusts them.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..errors import ZeropointError
from ..hashing import sha256_file, sha256_tree
from ..workspace import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "zeropoint-export/1"


def new_export_id(fmt: str) -> str:
    return f"{fmt}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def source_hash(path: str | Path) -> dict:
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p), "kind": "file", "size": p.stat().st_size}
    if p.is_dir():
        digest, files = sha256_tree(p)
        return {"path": str(p), "sha256": digest, "kind": "tree", "n_files": len(files)}
    return {"path": str(p), "sha256": None, "kind": "missing", "reason": "source path not found"}


def file_entries(root: Path, files: list[str | Path]) -> list[dict]:
    out = []
    for f in files:
        f = Path(f)
        for q in ([f] if f.is_file() else sorted(x for x in f.rglob("*") if x.is_file())):
            out.append({"path": q.relative_to(root).as_posix(), "size": q.stat().st_size, "sha256": sha256_file(q)})
    return out


def tool_versions() -> dict:
    out = {}
    for pkg in ("tinygrad", "onnx", "onnxruntime", "numpy", "llama_cpp_python"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def write_manifest(export_dir: Path, record: dict) -> Path:
    path = Path(export_dir) / MANIFEST
    atomic_write_text(path, json.dumps({"format_version": FORMAT, **record}, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_manifest(export_dir: str | Path) -> dict:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ZeropointError(f"{export_dir} has no {MANIFEST}; pass an export directory written by `zpctl export`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ZeropointError(f"{path} is not valid JSON ({e}); the export is corrupt, export again") from None


def verify_manifest(export_dir: str | Path) -> dict:
    """Re-hash every artifact file; raise naming the first that is missing or changed."""
    root = Path(export_dir)
    man = read_manifest(root)
    for e in man.get("files", []):
        p = root / e["path"]
        if not p.is_file():
            raise ZeropointError(f"export file {p} is missing; the export is incomplete, export again")
        if p.stat().st_size != e["size"] or sha256_file(p) != e["sha256"]:
            raise ZeropointError(f"export file {p} does not match its manifest hash (modified or truncated); export again")
    return man
