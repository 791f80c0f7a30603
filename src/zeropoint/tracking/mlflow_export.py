"""`zpctl runs export RUN --mlflow`: one Zeropoint run as one MLflow run, through the MLflow client library.

What goes over: params = the flattened config; metrics = every step row (`train/<field>`) and eval row
(`eval/<field>`) at its step, plus the perf summary (`perf/<figure>`, only where measured); tags = run id, kind,
status, device, tinygrad version, config and data SHA-256s, git commit, hardware fingerprint; artifacts =
the model card (checked against its checkpoint manifest), loss_curve.csv and a loss-curve PNG, config.json,
run.json and perf.json/perf.png.

Idempotent: the MLflow run is found again by its `zeropoint.run_id` tag (a live `--track mlflow` run is found
the same way) and only metric points it lacks are logged, so exporting twice, or after a live run, leaves one
MLflow run with one point per step. Params never change for a run (a resume needs the same config), so a param
that differs means another run shares the id: refused, naming the key.

The tracking URI: `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else a file store in the workspace
(`$ZP_HOME/mlruns`). MLflow 3.18 keeps its file store in maintenance mode and refuses it unless
`MLFLOW_ALLOW_FILE_STORE=true`; a file store is what a single appliance needs (no database server), so that
opt-in is set for file URIs unless the user set it already.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ZeropointError
from ..evidence import Run
from ..hashing import sha256_json
from ..workspace import workspace
from .plots import run_loss_png
from .series import (
    PERF_FIGURES,
    RunSeries,
    dataset_ids,
    final_metrics,
    flatten,
    model_card,
    perf_summary,
    run_series,
    ts_ms,
)

EXPERIMENT = "zeropoint"
RUN_TAG = "zeropoint.run_id"
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_PARAM_LEN = 6000        # MLflow's limit on a param value
BATCH = 1000                # MLflow's limit on metrics per log_batch
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
INSTALL = "pip install 'mlflow-skinny==3.18.0' (the `track` extra: pip install -e '.[track]')"


def tracking_uri(uri: str | None = None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or str(workspace().root / "mlruns")
    if "://" not in uri and not uri.startswith(("file:", "databricks")):   # a plain path is a file store
        uri = Path(uri).expanduser().resolve().as_uri()
    return uri


def client(uri: str | None = None):
    """(MlflowClient, resolved URI); a clear error when MLflow is missing or the store cannot be opened."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ZeropointError(f"MLflow export needs the MLflow client: {INSTALL}") from None
    uri = tracking_uri(uri)
    if urlparse(uri).scheme == "file":
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    # MLflow's own HTTP defaults retry an unreachable server for about four minutes (measured: 247 s) before they
    # fail: an export would hang and a live tracker would stall training. Fail in seconds unless the user chose.
    for var, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(var, value)
    try:
        return MlflowClient(tracking_uri=uri), uri
    except Exception as e:
        sql = urlparse(uri).scheme.split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql")
        raise ZeropointError(f"cannot open the MLflow tracking store {uri}: {type(e).__name__}: {e}; " + (
            "a database store needs the full MLflow package (pip install mlflow==3.18.0), or use a file: path or "
            "your MLflow server's http(s) URI" if sql else
            "check --tracking-uri (a file: path, or http(s)://your-mlflow-server)")) from None


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(name)
    if exp.lifecycle_stage == "deleted":
        raise ZeropointError(f"MLflow experiment {name!r} is deleted; restore it in MLflow or pass --experiment NEW")
    return exp.experiment_id


def run_tags(run: Run, status: str) -> dict[str, str]:
    rec = run.record
    ds = dataset_ids(run)
    data_sha = sha256_json(sorted((d["name"] or "", d["sha256"] or "") for d in ds)) if ds else None
    tags = {RUN_TAG: run.id, "zeropoint.kind": rec.get("kind"), "zeropoint.status": status,
            "zeropoint.device": rec.get("device"), "zeropoint.tinygrad_version": rec.get("tinygrad_version"),
            "zeropoint.config_sha256": rec.get("config_sha256"),
            "zeropoint.data_sha256": data_sha,
            "zeropoint.datasets": json.dumps(ds) if ds else None,
            "zeropoint.git_commit": rec.get("git_commit"), "mlflow.source.git.commit": rec.get("git_commit"),
            "zeropoint.hardware_fingerprint": rec.get("hardware_fingerprint"), "zeropoint.seed": rec.get("seed"),
            "zeropoint.simulated": str(bool(rec.get("simulated"))).lower(), "zeropoint.command": rec.get("command"),
            "zeropoint.warnings": "; ".join(rec.get("warnings") or []) or None}
    for d in ds:
        tags[f"zeropoint.data.{d['name']}.sha256"] = d["sha256"]
    return {k: str(v)[:5000] for k, v in tags.items() if v is not None}


def params_of(run: Run) -> dict[str, str]:
    out = {}
    for k, v in flatten(run.record.get("config") or {}).items():
        s = v if isinstance(v, str) else json.dumps(v)
        out[k[:250]] = s[:MAX_PARAM_LEN]
    return out


def find_run(c, exp_id: str, run_id: str):
    found = c.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'", max_results=10,
                          order_by=["attributes.start_time ASC"])
    return found[0] if found else None


def open_run(c, exp_id: str, run: Run, status: str):
    """The MLflow run for this Zeropoint run: found by tag, else created. Returns (mlflow Run, created)."""
    existing = find_run(c, exp_id, run.id)
    if existing is not None:
        return existing, False
    return c.create_run(exp_id, start_time=ts_ms(run.record.get("started_at")), tags=run_tags(run, status),
                        run_name=run.id), True


def log_params(c, ml_run, run: Run) -> int:
    from mlflow.entities import Param
    have = ml_run.data.params
    want = params_of(run)
    clash = sorted(k for k, v in want.items() if k in have and have[k] != v)
    if clash:
        raise ZeropointError(f"MLflow run {ml_run.info.run_id} (tag {RUN_TAG}={run.id}) has other values for "
                             f"{', '.join(clash[:5])}: another run with this id was exported there; export into "
                             "another --experiment")
    new = [Param(k, v) for k, v in want.items() if k not in have]
    for i in range(0, len(new), 100):
        c.log_batch(ml_run.info.run_id, params=new[i:i + 100])
    return len(new)


def log_points(c, mlflow_run_id: str, points: dict[str, list[tuple[int, float, int]]]) -> tuple[int, int]:
    """Log (step, value, ts_ms) points per metric that the MLflow run does not already hold at that step."""
    from mlflow.entities import Metric
    new, skipped = [], 0
    for key, pts in points.items():
        have = {m.step for m in c.get_metric_history(mlflow_run_id, key)}
        for step, value, ts in pts:
            if step in have:
                skipped += 1
            else:
                new.append(Metric(key, value, ts or 0, step))
    for i in range(0, len(new), BATCH):
        c.log_batch(mlflow_run_id, metrics=new[i:i + BATCH])
    return len(new), skipped


def metric_points(rs: RunSeries) -> dict[str, list[tuple[int, float, int]]]:
    pts = {name: [(p.step, p.value, p.ts_ms) for p in rs.points(name)] for name in sorted(rs.series)}
    fin = final_metrics(rs)
    last = fin.get("steps") or 0
    end = ts_ms(rs.run.record.get("ended_at"))
    for k in PERF_FIGURES:
        if isinstance(fin.get(k), (int, float)):
            pts[f"perf/{k}"] = [(last, float(fin[k]), end)]
    for k, v in fin.items():
        if k.startswith(("test_", "eval:")) and isinstance(v, (int, float)):
            pts[k.replace("test_", "test/", 1).replace(":", "/")] = [(last, float(v), end)]
    return pts


def log_artifacts(c, mlflow_run_id: str, run: Run, rs: RunSeries) -> tuple[list[str], str | None, str | None]:
    """Upload the evidence files; returns (artifact paths, model card checkpoint, reason when there is no card)."""
    logged = []
    card, card_ckpt, card_reason = model_card(run)
    with tempfile.TemporaryDirectory(prefix="zp-mlflow-") as tmp:
        tmp = Path(tmp)
        for name, data in card.items():
            (tmp / name).write_bytes(data)
            c.log_artifact(mlflow_run_id, str(tmp / name), "model_card")
            logged.append(f"model_card/{name}")
        if rs.series.get("train/loss"):
            png = run_loss_png(rs, tmp / "loss_curve.png")
            c.log_artifact(mlflow_run_id, str(png), "evidence")
            logged.append("evidence/loss_curve.png")
        perf = perf_summary(run)
        if perf is not None:
            (tmp / "perf_summary.json").write_text(json.dumps(perf, indent=2, default=str) + "\n")
            c.log_artifact(mlflow_run_id, str(tmp / "perf_summary.json"), "evidence")
            logged.append("evidence/perf_summary.json")
    for name in ("loss_curve.csv", "config.json", "run.json", "perf.png"):
        if (run.dir / name).is_file():
            c.log_artifact(mlflow_run_id, str(run.dir / name), "evidence")
            logged.append(f"evidence/{name}")
    return logged, card_ckpt, card_reason


def export_mlflow(run: Run, *, tracking_uri: str | None = None, experiment: str = EXPERIMENT) -> dict:
    c, uri = client(tracking_uri)
    from mlflow.exceptions import MlflowException
    try:
        return _export(c, uri, run, experiment)
    except (MlflowException, OSError) as e:
        raise ZeropointError(f"MLflow export to {uri} failed: {type(e).__name__}: {str(e)[:400]}; check that the "
                             "tracking server is up and --tracking-uri is right (exporting again resumes safely)"
                             ) from None


def _export(c, uri: str, run: Run, experiment: str) -> dict:
    from mlflow.entities import RunTag
    rs = run_series(run)
    status = rs.status
    exp_id = experiment_id(c, experiment)
    ml_run, created = open_run(c, exp_id, run, status)
    mid = ml_run.info.run_id
    n_params = log_params(c, ml_run, run)
    logged, skipped = log_points(c, mid, metric_points(rs))
    tags = run_tags(run, status)
    perf = perf_summary(run) or {}
    energy = (perf.get("energy") or {})
    if perf and energy.get("energy_j") is None:
        tags["zeropoint.perf.energy_j"] = f"null: {energy.get('reason') or 'not measured'}"[:5000]
    if perf and perf.get("mfu") is None:
        tags["zeropoint.perf.mfu"] = "null: no FLOP count or no peak for this run"
    c.log_batch(mid, tags=[RunTag(k, v) for k, v in tags.items()])
    artifacts, card_ckpt, card_reason = log_artifacts(c, mid, run, rs)
    if status in STATUS:
        c.set_terminated(mid, STATUS[status], end_time=ts_ms(run.record.get("ended_at")))
    return {"run_id": run.id, "mlflow_run_id": mid, "experiment": experiment, "experiment_id": exp_id,
            "tracking_uri": uri, "created": created, "params_logged": n_params, "metric_points_logged": logged,
            "metric_points_already_there": skipped, "tags": sorted(tags), "artifacts": artifacts,
            "model_card": card_ckpt, "model_card_reason": card_reason, "status": status}

