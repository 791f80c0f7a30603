"""A run's evidence as series and figures: the one reading of `metrics.jsonl` that compare and the exporters share.

Step rows become `train/<field>` series and `eval` rows `eval/<field>` series, keyed by step. A resumed run can
hold a step twice (rows logged before the interruption, then again after the resume from an earlier
checkpoint); the later row wins, as in `loss_curve.csv`, which the resume trims.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..evidence import Run, effective_status, read_metrics
from ..workspace import workspace

NOT_SERIES = {"ts", "event", "step"}
# the perf summary's figures that go to the trackers as `perf/<name>` (only where measured)
PERF_FIGURES = ("tokens_per_s", "images_per_s", "steady_step_s", "compile_s", "mfu", "energy_j", "rss_peak_bytes")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ts_ms(ts: str | None) -> int | None:
    """An evidence timestamp (ISO 8601) as epoch milliseconds, the unit MLflow and TensorBoard take."""
    if not ts:
        return None
    try:
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    except ValueError:
        return None


@dataclass
class Point:
    step: int
    value: float
    ts_ms: int | None


@dataclass
class RunSeries:
    run: Run
    status: str
    series: dict[str, dict[int, Point]] = field(default_factory=dict)   # "train/loss" -> step -> point
    events: list[dict] = field(default_factory=list)                     # every non-step row, in order

    def points(self, name: str) -> list[Point]:
        return [self.series[name][s] for s in sorted(self.series.get(name, {}))]

    def xy(self, name: str) -> list[list[float]]:
        return [[p.step, p.value] for p in self.points(name)]


def row_points(row: dict) -> list[tuple[str, Point]]:
    """A metrics.jsonl row as named points: a step row's numbers as `train/<field>`, an eval row's as
    `eval/<field>`; any other row has none. What the exports and the live trackers all log."""
    prefix = {"step": "train", "eval": "eval"}.get(row.get("event"))
    if prefix is None or not isinstance(row.get("step"), int):
        return []
    ts = ts_ms(row.get("ts"))
    return [(f"{prefix}/{k}", Point(row["step"], float(v), ts)) for k, v in row.items()
            if k not in NOT_SERIES and is_number(v)]


def run_series(run: Run) -> RunSeries:
    out = RunSeries(run=run, status=effective_status(run.record))
    for row in read_metrics(run):
        if row.get("event") != "step":
            out.events.append(row)
        for name, p in row_points(row):
            out.series.setdefault(name, {})[p.step] = p
    return out


def flatten(d: dict | None, prefix: str = "") -> dict:
    """{"train": {"lr": 3e-3}} -> {"train.lr": 3e-3}. Lists stay values (a dataset list is one setting)."""
    out: dict = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def perf_summary(run: Run) -> dict | None:
    """perf.json without its per-step rows, or None when the run has none."""
    try:
        doc = json.loads((run.dir / "perf.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    doc.pop("per_step", None)
    return doc


def _evals_of(run: Run) -> list[dict]:
    """`zpctl eval` results (evals/<id>/results.json) whose model is a checkpoint of this run."""
    root, out = workspace().evals, []
    for f in sorted(root.glob("*/results.json")) if root.is_dir() else []:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        model = str((rec.get("config") or {}).get("model") or "")   # the model reference the eval was given
        if run.id in Path(model).parts:                               # runs/<id>/checkpoints/step-N or runs/<id>
            out.append(rec)
    return out


def final_metrics(rs: RunSeries) -> dict:
    """The figures a comparison table lists: each measured value, or None with the reason under `null_reasons`."""
    rec, summ = rs.run.record, rs.run.record.get("summary") or {}
    out: dict = {}
    reasons: dict = {}
    loss = rs.points("train/loss")
    out["steps"] = loss[-1].step if loss else None
    out["final_train_loss"] = loss[-1].value if loss else None
    evals = [r for r in rs.events if r.get("event") == "eval"]
    last = evals[-1] if evals else {}
    for k, v in last.items():
        if k not in NOT_SERIES and is_number(v):
            out[f"heldout_{k}"] = v            # heldout_val_loss, heldout_val_ppl (vision: val accuracy)
    if not last:
        reasons["heldout"] = "the run logged no eval rows"
    test = next((r for r in reversed(rs.events) if r.get("event") == "test_eval"), None)
    for k, v in (test or {}).items():
        if k not in ("ts", "event", "eval_s", "n") and is_number(v):
            out[f"test_{k}"] = v
    for ev in _evals_of(rs.run):
        for task, t in (ev.get("tasks") or {}).items():
            for m, v in (t.get("metrics") or {}).items():
                if is_number(v):
                    out[f"eval:{task}/{m}"] = v
    perf = perf_summary(rs.run)
    figures = summ if perf is None else perf
    rate = "images_per_s" if "images_per_s" in figures else "tokens_per_s"   # the engine names its unit
    out[rate] = figures.get(rate)
    if perf is None:
        reasons["perf"] = "no perf.json (the run ended before its perf report, or is still going)"
    else:
        out["steady_step_s"] = (perf.get("steady_step_s") or {}).get("median")
        out["compile_s"] = perf.get("compile_s")
        out["mfu"] = perf.get("mfu")
        if perf.get("mfu") is None:
            reasons["mfu"] = (perf.get("peak") or {}).get("reason") or "no FLOP count or no peak for this run"
        energy = perf.get("energy") or {}
        out["energy_j"] = energy.get("energy_j")
        if energy.get("energy_j") is None:
            reasons["energy_j"] = energy.get("reason") or "not measured"
        out["rss_peak_bytes"] = (perf.get("memory") or {}).get("rss_peak_bytes")
    out["null_reasons"] = reasons
    if rec.get("simulated"):
        out["simulated"] = True
    return out


def dataset_ids(run: Run) -> list[dict]:
    """Name, version and SHA-256 of each dataset the run read (the file lists stay in run.json)."""
    return [{"name": d.get("name"), "version": d.get("version"), "sha256": d.get("sha256")}
            for d in run.record.get("datasets") or []]


CARD_FILES = ("model_card.json", "MODEL_CARD.md")


def model_card(run: Run) -> tuple[dict[str, bytes], str | None, str | None]:
    """The model card of the run's newest checkpoint that has one: ({name: bytes}, checkpoint dir, None), each file
    checked against the checkpoint manifest's SHA-256; or ({}, None, reason)."""
    ckpts = sorted(run.checkpoints_dir.glob("step-*")) if run.checkpoints_dir.is_dir() else []
    for ck in reversed(ckpts):
        if not (ck / CARD_FILES[0]).is_file():
            continue
        try:
            listed = {e["path"]: e["sha256"] for e in json.loads((ck / "manifest.json").read_text())["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}, None, f"{ck.name}: unreadable manifest.json, so its model card cannot be checked"
        out = {}
        for name in CARD_FILES:
            if (ck / name).is_file():
                data = (ck / name).read_bytes()
                if listed.get(name) != hashlib.sha256(data).hexdigest():
                    return {}, None, f"{ck.name}/{name} does not match its manifest hash; run `zpctl ckpt verify {ck}`"
                out[name] = data
        return out, str(ck), None
    return {}, None, ("no checkpoint of this run holds a model card (recipes write it into the final checkpoint; "
                      "the run may have ended before it)")
