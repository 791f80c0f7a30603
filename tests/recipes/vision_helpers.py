"""Shared by the vision recipe tests: register + approve a dataset through the governance library, run a
recipe twice (once interrupted and resumed), compare."""
import csv
from pathlib import Path

import numpy as np

from zeropoint.governance.manifest import add_dataset, approve, scan_dataset

REPO = Path(__file__).resolve().parents[2]


def register(path, name, license, **kw):
    add_dataset(path, name, license, "public", **kw)
    scan_dataset(name)
    approve(name, "vision-tests", accept_review="test data reviewed by the test author")


def losses(run_dir) -> list[tuple[int, float]]:
    rows = list(csv.DictReader(open(Path(run_dir) / "loss_curve.csv", encoding="utf-8")))
    return [(int(r["step"]), float(r["loss"])) for r in rows]


class Crash(RuntimeError):
    pass


def crash_at_batch(monkeypatch, module, k_crash: int):
    """Make module.batch_indices raise at global micro-batch k_crash (after earlier steps checkpointed)."""
    orig = module.batch_indices

    def patched(k, *a, **kw):
        if k == k_crash:
            raise Crash(f"simulated crash at micro-batch {k}")
        return orig(k, *a, **kw)
    monkeypatch.setattr(module, "batch_indices", patched)
    return orig


def same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
