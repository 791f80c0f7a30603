"""`zpctl train --track mlflow|tensorboard`: stream a run's metrics to a tracker while it trains.

A tracker is an observer of the run's evidence (`evidence.observe_runs`): it sees each metrics.jsonl row right
after `Run.log_step` / `Run.event` wrote it, the same rows `runs export` reads later, so a live log and an export
agree (and a later `runs export --mlflow` into the same store finds the live MLflow run and only adds what it
lacks). A tracker that raises is dropped by the run, which records a `tracker_warning` row and a `warnings` entry
in run.json and trains on.

    with live_tracking("mlflow", "file:/srv/mlruns"):
        recipe_run(cfg)
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from ..errors import ConfigError
from ..evidence import Run, observe_runs
from . import mlflow_export, tensorboard_export
from .series import row_points

KINDS = ("mlflow", "tensorboard")
FLUSH_S = 5.0          # MLflow: send buffered points at most this long after they were logged (and at each eval)


class MLflowTracker:
    name = "mlflow"

    def __init__(self, run: Run, uri: str | None, experiment: str):
        self.c, self.uri = mlflow_export.client(uri)
        exp = mlflow_export.experiment_id(self.c, experiment)
        ml_run, _ = mlflow_export.open_run(self.c, exp, run, "running")
        self.mid = ml_run.info.run_id
        if ml_run.info.status != "RUNNING":           # a resumed run reopens its MLflow run
            self.c.update_run(self.mid, status="RUNNING")
        mlflow_export.log_params(self.c, ml_run, run)
        self.run, self.pending, self.last_flush = run, [], time.monotonic()

    def on_row(self, row: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.pending += [Metric(name, p.value, p.ts_ms or now, p.step) for name, p in row_points(row)]
        if row.get("event") == "eval" or time.monotonic() - self.last_flush > FLUSH_S or len(self.pending) >= 900:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.c.log_batch(self.mid, metrics=self.pending)
        self.pending, self.last_flush = [], time.monotonic()

    def close(self, status: str | None) -> None:
        from mlflow.entities import RunTag
        self.flush()
        tags = mlflow_export.run_tags(self.run, status or "unknown")
        self.c.log_batch(self.mid, tags=[RunTag(k, v) for k, v in tags.items()])
        if status in mlflow_export.STATUS:
            self.c.set_terminated(self.mid, mlflow_export.STATUS[status])


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, run: Run, logdir: str | None):
        self.dir = Path(logdir).expanduser().resolve() / run.id if logdir else run.dir / "tensorboard"
        self.w = tensorboard_export.summary_writer(self.dir)
        for tag, text in tensorboard_export.run_text(run).items():
            self.w.add_text(tag, text, global_step=0)

    def on_row(self, row: dict) -> None:
        for name, p in row_points(row):
            self.w.add_scalar(name, p.value, global_step=p.step, walltime=p.ts_ms / 1000 if p.ts_ms else None)
        if row.get("event") == "eval":
            self.w.flush()

    def close(self, status: str | None) -> None:
        self.w.close()


class _Factory:
    """Called by `start_run` for each run it opens; `name` labels a failure in the run's warnings."""

    def __init__(self, kind: str, uri: str | None, experiment: str):
        self.name, self.uri, self.experiment = kind, uri, experiment

    def __call__(self, run: Run):
        if self.name == "mlflow":
            return MLflowTracker(run, self.uri, self.experiment)
        return TensorBoardTracker(run, self.uri)


def check_available(kind: str) -> None:
    """Refuse before any compute when the tracker's library is missing: a flag the user gave is not silently dropped."""
    if kind not in KINDS:
        raise ConfigError(f"unknown --track {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        if kind == "mlflow":
            import mlflow.tracking  # noqa: F401
        else:
            import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError(f"--track {kind} needs its client library: "
                          f"{mlflow_export.INSTALL if kind == 'mlflow' else tensorboard_export.INSTALL}") from None


def live_tracking(kind: str | None, uri: str | None = None, experiment: str = "zeropoint"):
    """A context in which every run started streams to `kind`; a no-op context when kind is None."""
    if kind is None:
        return nullcontext()
    check_available(kind)
    return observe_runs(_Factory(kind, uri, experiment))

