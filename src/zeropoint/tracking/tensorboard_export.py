"""`zpctl runs export RUN --tensorboard DIR`: the run's scalars as TensorBoard event files, with tensorboardX.

`DIR/<run id>/` gets every step row as `train/<field>` and every eval row as `eval/<field>` at its step and
wall time, the perf summary as `perf/<figure>` at the last step (only where measured), and the config, the
datasets and the run's identity as text. Point TensorBoard at DIR to see several runs overlaid.

Re-exporting replaces `DIR/<run id>/` whole (written beside it, then swapped in), so the log holds one copy
of each point; a directory there that this exporter did not write is never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ZeropointError
from ..evidence import Run
from .series import PERF_FIGURES, RunSeries, final_metrics, run_series

MARKER = "zeropoint-export.json"
INSTALL = "pip install 'tensorboardX==2.6.5' (the `track` extra: pip install -e '.[track]')"


def summary_writer(logdir: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ZeropointError(f"TensorBoard export needs tensorboardX: {INSTALL}") from None
    return SummaryWriter(logdir=str(logdir), flush_secs=5)


def run_text(run: Run) -> dict[str, str]:
    """Markdown the TensorBoard text plugin shows: the config, the datasets and the run's identity."""
    rec = run.record
    ident = "\n".join(f"| {k} | {rec.get(k)} |" for k in ("id", "kind", "status", "device", "tinygrad_version",
                                                          "config_sha256", "git_commit", "hardware_fingerprint",
                                                          "seed", "simulated", "started_at", "ended_at"))
    data = "\n".join(f"| {d.get('name')} | {d.get('version')} | {d.get('sha256')} |" for d in rec.get("datasets") or [])
    return {"run": "| field | value |\n|---|---|\n" + ident,
            "config": "```json\n" + json.dumps(rec.get("config") or {}, indent=2, sort_keys=True) + "\n```",
            "datasets": ("| dataset | version | sha256 |\n|---|---|---|\n" + data) if data else "no governed dataset"}


def write_scalars(w, rs: RunSeries) -> int:
    n = 0
    for name in sorted(rs.series):
        for p in rs.points(name):
            w.add_scalar(name, p.value, global_step=p.step, walltime=p.ts_ms / 1000 if p.ts_ms else None)
            n += 1
    fin = final_metrics(rs)
    for k in PERF_FIGURES:
        if isinstance(fin.get(k), (int, float)):
            w.add_scalar(f"perf/{k}", float(fin[k]), global_step=fin.get("steps") or 0)
            n += 1
    return n


def export_tensorboard(run: Run, logdir: Path | str) -> dict:
    final = Path(logdir).expanduser().resolve() / run.id
    if final.exists() and not (final / MARKER).is_file():
        raise ZeropointError(f"{final} exists and was not written by `zpctl runs export --tensorboard`; "
                             "choose another DIR or move it away (nothing was changed)")
    final.parent.mkdir(parents=True, exist_ok=True)
    rs = run_series(run)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{run.id}.", suffix=".tmp"))
    try:
        w = summary_writer(tmp)
        n = write_scalars(w, rs)
        for tag, text in run_text(run).items():
            w.add_text(tag, text, global_step=0)
        w.close()
        (tmp / MARKER).write_text(json.dumps({"run_id": run.id, "scalars": n, "status": rs.status}) + "\n")
        old = None
        if final.exists():   # swap: the new log in, then the old one out
            old = final.with_name(f".{run.id}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    events = sorted(p.name for p in final.glob("events.out.tfevents.*"))
    return {"run_id": run.id, "logdir": str(final), "scalars": n, "series": sorted(rs.series), "event_files": events,
            "status": rs.status, "view": f"tensorboard --logdir {final.parent}"}
