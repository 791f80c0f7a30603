"""Run evidence: every recipe and compute command records its run under `runs/<run_id>/`.

- `run.json`: command, typed config and its SHA-256, seed, datasets and hashes, device, tinygrad version,
  hardware fingerprint, the NVIDIA GPU inventory from NVML (`gpus`: `available: false` + reason without one),
  git commit, start/end, status, `simulated` (and why). Rewritten atomically.
- `metrics.jsonl`: one JSON object per step or event, appended.
- `loss_curve.csv`: `step,step_ms,<unit>_per_s,loss` (tokens_per_s for language models, images_per_s for vision).

A run that raises is marked `failed`; Ctrl-C or SIGTERM marks it `interrupted`. A SIGKILL cannot be caught,
so `run.json` also stores the pid and host: a `running` run whose process is gone reads as `interrupted`.

Observers (live trackers, `zeropoint.tracking.live`) see every metrics.jsonl row right after it is written:
`with observe_runs(factory): ...` makes each run started inside call `factory(run)` for an observer with
`on_row(row)` and `close(status)`. An observer that raises is dropped and leaves a `tracker_warning` row and an
entry in `run.json` `warnings`: a tracker never fails a run.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import secrets
import signal
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from .appliance.identity import git_commit, hardware_fingerprint, tinygrad_version
from .appliance.nvml import gpu_inventory
from .clock import utcnow
from .config import config_dict, config_hash
from .errors import ZeropointError
from .hashing import canonical_json, sha256_json
from .workspace import atomic_write_text, workspace

TERMINAL = {"succeeded", "failed", "interrupted"}
_OBSERVER_FACTORIES: ContextVar[tuple] = ContextVar("zp_run_observers", default=())


def loss_curve_header(unit: str = "tokens") -> list[str]:
    return ["step", "step_ms", f"{unit}_per_s", "loss"]


def throughput(row: dict) -> tuple[float | None, str]:
    """(value, unit) of a step row's `<unit>_per_s` field: tokens for a language model, images for vision."""
    for k, v in row.items():
        if k.endswith("_per_s"):
            return v, k[: -len("_per_s")]
    return None, "tokens"


class RunInterrupted(BaseException):
    """Raised inside a run on SIGTERM so cleanup runs and the run is marked interrupted."""


@dataclass
class Run:
    id: str
    dir: Path
    record: dict = field(default_factory=dict)
    observers: list = field(default_factory=list)

    @property
    def run_json(self) -> Path: return self.dir / "run.json"
    @property
    def metrics_path(self) -> Path: return self.dir / "metrics.jsonl"
    @property
    def loss_curve_path(self) -> Path: return self.dir / "loss_curve.csv"
    @property
    def checkpoints_dir(self) -> Path: return self.dir / "checkpoints"

    def save(self) -> None:
        atomic_write_text(self.run_json, json.dumps(self.record, indent=2, sort_keys=True, default=str) + "\n")

    def update(self, **fields) -> None:
        self.record.update(fields)
        self.save()

    def event(self, kind: str, **fields) -> None:
        row = {"ts": utcnow(), "event": kind, **fields}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
        for obs in list(self.observers):
            try:
                obs.on_row(row)
            except Exception as e:
                self.drop_observer(obs, "on_row", e)

    def drop_observer(self, obs, where: str, err: BaseException) -> None:
        """A failing observer is removed and leaves its warning in the evidence; the run goes on."""
        if obs in self.observers:
            self.observers.remove(obs)
        msg = f"{getattr(obs, 'name', type(obs).__name__)} tracker stopped ({where}): {type(err).__name__}: {err}"
        self.record.setdefault("warnings", []).append(msg)
        self.save()
        self.event("tracker_warning", tracker=getattr(obs, "name", type(obs).__name__), message=msg)

    def log_step(self, step: int, loss: float, step_ms: float, per_s: float | None, unit: str = "tokens",
                 **extra) -> None:
        """One training step: a metrics.jsonl row (with `<unit>_per_s`) and a loss_curve.csv row."""
        self.event("step", step=step, loss=loss, step_ms=step_ms, **{f"{unit}_per_s": per_s}, **extra)
        new = not self.loss_curve_path.exists()
        with open(self.loss_curve_path, "a", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(loss_curve_header(unit))
            w.writerow([step, f"{step_ms:.3f}", "" if per_s is None else f"{per_s:.3f}", repr(float(loss))])

    def truncate_after(self, step: int) -> None:
        """On resume: drop loss-curve rows past the checkpoint step so the curve has one row per step."""
        if not self.loss_curve_path.exists():
            return
        rows = list(csv.reader(self.loss_curve_path.open(encoding="utf-8")))
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        buf = io.StringIO()
        csv.writer(buf).writerows(keep)
        atomic_write_text(self.loss_curve_path, buf.getvalue())


def new_run_id(kind: str) -> str:
    return f"{kind}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_status(record: dict) -> str:
    """`running` is believed only while its process lives on this host; otherwise the run was killed."""
    st = record.get("status", "unknown")
    if st == "running" and record.get("host") == platform.node() and record.get("pid") and not _pid_alive(record["pid"]):
        return "interrupted"
    return st


def load_run(run_id_or_path: str | Path) -> Run:
    p = Path(run_id_or_path)
    d = p if (p / "run.json").is_file() else workspace().runs / str(run_id_or_path)
    if not (d / "run.json").is_file():
        raise ZeropointError(f"no run {run_id_or_path!r} under {workspace().runs}; list runs with `zpctl runs ls`")
    return Run(id=d.name, dir=d, record=json.loads((d / "run.json").read_text(encoding="utf-8")))


def list_runs() -> list[dict]:
    root = workspace().runs
    out = []
    for rj in sorted(root.glob("*/run.json")) if root.is_dir() else []:
        try:
            rec = json.loads(rj.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            rec = {"id": rj.parent.name, "status": "corrupt"}
        rec["status"] = effective_status(rec)
        out.append(rec)
    return sorted(out, key=lambda r: r.get("started_at") or "")


def read_metrics(run: Run) -> list[dict]:
    if not run.metrics_path.exists():
        return []
    return [json.loads(line) for line in run.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextmanager
def observe_runs(*factories):
    """Every run started inside the block gets `factory(run)` as an observer of its metrics rows."""
    token = _OBSERVER_FACTORIES.set(_OBSERVER_FACTORIES.get() + factories)
    try:
        yield
    finally:
        _OBSERVER_FACTORIES.reset(token)


def _attach_observers(run: Run) -> None:
    for factory in _OBSERVER_FACTORIES.get():
        try:
            run.observers.append(factory(run))
        except Exception as e:
            run.drop_observer(factory, "start", e)


def _close_observers(run: Run) -> None:
    for obs in list(run.observers):
        try:
            obs.close(run.record.get("status"))
        except Exception as e:
            run.drop_observer(obs, "close", e)
    run.observers.clear()


@contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def handler(signum, frame):
        raise RunInterrupted(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def start_run(command: str, config: BaseModel | dict | None = None, *, kind: str = "run", seed: int | None = None,
              datasets: list[dict] | None = None, scope=None, run_id: str | None = None, resume: bool = False):
    """Create (or, with resume=True, reopen) `runs/<run_id>/` and keep its status honest whatever happens.

    `scope` is the result of `scope.require_real_compute()`; it decides `simulated` and the device.
    """
    ws = workspace()
    if resume:
        run = load_run(run_id)
        run.record.setdefault("resumes", []).append({"at": utcnow(), "command": command, "pid": os.getpid()})
        run.record.update(status="running", pid=os.getpid(), host=platform.node(), ended_at=None, error=None)
    else:
        run_id = run_id or new_run_id(kind)
        d = ws.runs / run_id
        d.mkdir(parents=True, exist_ok=False)
        cfg = config_dict(config) if isinstance(config, BaseModel) else config
        run = Run(id=run_id, dir=d, record={
            "id": run_id, "kind": kind, "command": command,
            "config": cfg, "config_sha256": (config_hash(config) if isinstance(config, BaseModel)
                                             else sha256_json(cfg) if cfg is not None else None),
            "seed": seed, "datasets": datasets or [],
            "device": getattr(scope, "device", None), "tinygrad_version": tinygrad_version(),
            "hardware_fingerprint": hardware_fingerprint(), "gpus": gpu_inventory(), "git_commit": git_commit(),
            "started_at": utcnow(), "ended_at": None, "status": "running",
            "simulated": bool(getattr(scope, "simulated", False)),
            "simulated_reasons": list(getattr(scope, "reasons", ())),
            "pid": os.getpid(), "host": platform.node(),
            "job_id": os.environ.get("ZP_JOB_ID"),   # set by the orchestrator when the run is one of its jobs
        })
        if cfg is not None:
            atomic_write_text(d / "config.json", canonical_json(cfg).decode() + "\n")
    if run.record["simulated"]:
        run.record["banner"] = "SIMULATED RUN - NOT REAL COMPUTE"
    run.save()
    _attach_observers(run)
    run.event("resumed" if resume else "started", command=command)
    t0 = time.time()
    try:
        with _sigterm_as_interrupt():
            yield run
    except (KeyboardInterrupt, RunInterrupted) as e:
        run.event("interrupted", reason=str(e) or type(e).__name__)
        run.update(status="interrupted", ended_at=utcnow(), error=f"interrupted: {e or type(e).__name__}")
        raise
    except BaseException as e:
        run.event("failed", error=f"{type(e).__name__}: {e}")
        run.update(status="failed", ended_at=utcnow(), error=f"{type(e).__name__}: {e}")
        raise
    else:
        run.event("finished", wall_s=round(time.time() - t0, 3))
        run.update(status="succeeded", ended_at=utcnow())
    finally:
        _close_observers(run)
