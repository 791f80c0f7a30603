"""Run lookups both the API routes and the control center use."""
from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import HTTPException

from ..orchestrator.jobs import safe_name
from ..workspace import workspace

MAX_OFFSET = 2**53    # byte and row offsets: past any real file, inside SQLite's and a JavaScript client's integers


def run_dir_or_404(run_id: str) -> Path:
    """The run's directory (a safe name with a run.json), else 404 naming the list route."""
    d = workspace().runs / safe_name(run_id, "run id")
    if not (d / "run.json").is_file():
        raise HTTPException(404, f"no run {run_id!r}; list runs with GET /v1/runs")
    return d


def last_step(run_dir: Path) -> dict | None:
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return None
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - (1 << 16)))
        lines = f.read().splitlines()
    for raw in reversed(lines):
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if row.get("event") == "step":
            return row
    return None
