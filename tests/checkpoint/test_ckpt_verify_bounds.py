"""Issue 25 #12: `zpctl ckpt verify` checks sizes from metadata before reading, hashes in blocks, and refuses
manifest entries without a size and duplicated entries with a message (never a traceback)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zeropoint.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _save(root, step=1):
    w = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4)}
    return save_checkpoint(root, step, weights=w, optimizer={"m.a.weight": w["a.weight"] * 0.1}, state={},
                           config={"recipe": "x"}, config_sha256="ab" * 32)


def _edit_manifest(p: Path, fn) -> None:
    man = json.loads((p / "manifest.json").read_text())
    fn(man)
    (p / "manifest.json").write_text(json.dumps(man))


def test_entry_without_size_and_duplicate_entries_are_named(tmp_path):
    p = _save(tmp_path / "a")
    _edit_manifest(p, lambda m: m["files"][0].pop("size"))
    for fn in (verify_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match="size"):
            fn(p)
    from typer.testing import CliRunner
    from zeropoint.cli.main import app
    r = CliRunner().invoke(app, ["ckpt", "verify", str(p)])
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    assert r.exit_code == 1 and "size" in r.output and not crashed, (r.output, r.exception)
    q = _save(tmp_path / "b")
    _edit_manifest(q, lambda m: m["files"].append(dict(m["files"][0])))
    with pytest.raises(CheckpointError, match="twice"):
        verify_checkpoint(q)
    for bad in ({"path": "state.json", "size": -1, "sha256": "0" * 64}, {"path": "state.json", "size": "12", "sha256": "0" * 64},
                {"path": "state.json", "size": 12, "sha256": None}, ["state.json"]):
        r_ = _save(tmp_path / f"c{len(str(bad))}")
        _edit_manifest(r_, lambda m: m["files"].__setitem__(-1, bad))
        with pytest.raises(CheckpointError):
            verify_checkpoint(r_)


SPARSE = 256 << 20
CAPPED = ("import resource, sys; from zeropoint.checkpoint import verify_checkpoint, CheckpointError\n"
          "soft = int(open('/proc/self/statm').read().split()[0]) * 4096 + (128 << 20)\n"
          "resource.setrlimit(resource.RLIMIT_AS, (soft, soft))\n"
          "try:\n    verify_checkpoint(sys.argv[1]); print('ok')\n"
          "except CheckpointError as e:\n    print('refused:', e)\n")


@pytest.mark.parametrize("manifest_says", ["small", "huge"])
def test_a_huge_file_is_checked_under_a_memory_cap(tmp_path, manifest_says):
    """A 256 MB (sparse) model file under a 128 MB address-space cap: refused by its size from metadata when the
    manifest says otherwise, and hashed in blocks when the manifest agrees on the size."""
    p = _save(tmp_path)
    with open(p / "model.safetensors", "r+b") as f:
        f.truncate(SPARSE)
    if manifest_says == "huge":
        _edit_manifest(p, lambda m: [e.update(size=SPARSE) for e in m["files"] if e["path"] == "model.safetensors"])
    r = subprocess.run([sys.executable, "-c", CAPPED, str(p)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    want = "size" if manifest_says == "small" else "SHA-256"
    assert r.returncode == 0 and "refused:" in r.stdout and want in r.stdout, (r.stdout, r.stderr[-2000:])
