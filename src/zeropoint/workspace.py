"""The one root everything the appliance writes lives under: $ZP_HOME (default: the current directory)."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def datasets(self) -> Path: return self.root / "datasets"
    @property
    def runs(self) -> Path: return self.root / "runs"
    @property
    def evals(self) -> Path: return self.root / "evals"
    @property
    def exports(self) -> Path: return self.root / "exports"
    @property
    def redteam(self) -> Path: return self.root / "redteam"
    @property
    def audit_log(self) -> Path: return self.datasets / "audit.jsonl"

    def ensure(self, sub: str) -> Path:
        p = self.root / sub
        p.mkdir(parents=True, exist_ok=True)
        return p


def workspace() -> Workspace:
    return Workspace(Path(os.environ.get("ZP_HOME") or os.getcwd()).resolve())


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write via a temp file in the same directory and rename, so readers never see a partial file. `durable`
    fsyncs before the rename; caches whose entries are hash-checked on read skip it (a torn entry is rebuilt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(final: Path):
    """Yield a temp directory beside `final`; on success it is renamed into place (replacing nothing)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
