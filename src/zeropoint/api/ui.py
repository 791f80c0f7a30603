"""The control center: a static single-page console served at `/`, and the read-only JSON it needs beyond the API.

The page is plain HTML + CSS + ES modules shipped in `api/static/` (no build step, no CDN: it works offline and
every request it makes goes to the appliance that served it, which the Content-Security-Policy enforces).
The page itself is public - it holds no data; everything it shows comes from `/v1/...` with the bearer token
the user typed in (kept in sessionStorage), so the API's roles decide what each user sees and may do.

Routes added here (all behind the same bearer auth and roles as the rest of the API, all GET, none mutate):
- `/v1/whoami`: the token's actor and role, so the page can hide controls the role may not use;
- `/v1/overview`: appliance id, device, versions, executor, jobs by state, the queue and running jobs' last step;
- `/v1/runs/{id}/metrics`: the run's metrics.jsonl rows, or with `follow=true` server-sent events as rows are
  appended until the run ends (the live loss and tok/s curves);
- `/v1/runs/{id}/checkpoints`: each checkpoint's manifest, re-hashed against its files when `verify=true`;
- `/v1/runs/{id}/perf`: perf.json (step times, tok/s, MFU, memory, energy) without the per-step rows;
- `/v1/datasets/{name}/checks`: the approval policy applied to a dataset now (license and PII decisions), so
  an approver sees why approval would pass or fail before pressing the button;
- `/v1/redteam`: red-team summaries (ASR per family with bootstrap CIs, the gate);
- `/v1/drift`: eval-vs-baseline drift reports and data drift reports;
- `/v1/compare?runs=A&runs=B`: runs side by side (curves, final metrics, config diff, data check), as
  `zpctl runs compare --json` prints it.
- `/v1/releases`: release bundles: the decision, every gate, the bias gate's per-category figures and the harms
  checklist; with `verify=true` each bundle is re-verified (signature, file hashes, audit chain) first.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import anyio
from fastapi import HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ..appliance.identity import appliance_id, cpu_facts, version_info
from ..checkpoint import CheckpointError, list_checkpoints, verify_checkpoint
from ..evidence import TERMINAL, effective_status
from ..governance import manifest as gov
from ..governance.policy import load_policy
from ..orchestrator.executor import find_runs
from ..orchestrator.jobs import safe_name
from ..release.keys import key_paths
from ..release.verify import BundleError, verify_bundle
from ..tracking.compare import compare_runs
from ..workspace import workspace
from .auth import RANK
from .runs import MAX_OFFSET, last_step, run_dir_or_404

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
# the page may talk only to the server that served it: no CDN, no third-party fonts, no beacons
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


def static_files() -> dict[str, Path]:
    """The shipped assets by name: a fixed table, so no request path is ever joined onto the filesystem."""
    if not STATIC.is_dir():
        return {}
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in TYPES}


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _run_status(d: Path) -> str:
    rec = _read_json(d / "run.json") or {}
    return effective_status(rec)


# ---- summaries (plain functions over files, so tests can call them without a server) ---------------------------
def checkpoint_rows(run_dir: Path, verify: bool) -> list[dict]:
    out = []
    for p in list_checkpoints(run_dir / "checkpoints"):
        man = _read_json(p / "manifest.json") or {}
        files = man.get("files") if isinstance(man.get("files"), list) else []
        row = {"name": p.name, "step": man.get("step"), "weights": man.get("weights"),
               "config_sha256": man.get("config_sha256"),
               "bytes": sum(int(f.get("size") or 0) for f in files if isinstance(f, dict)), "files": len(files),
               "modified_at": max((q.stat().st_mtime for q in p.iterdir() if q.is_file()), default=None),
               "verified": None, "verify_error": None if verify else "not checked (pass verify=true)"}
        if verify:
            try:
                verify_checkpoint(p)
                row["verified"] = True
            except CheckpointError as e:
                row["verified"], row["verify_error"] = False, str(e)
        out.append(row)
    return out


def redteam_rows() -> list[dict]:
    root = workspace().redteam
    out = []
    for f in sorted(root.glob("*/summary.json")) if root.is_dir() else []:
        doc = _read_json(f)
        if doc is None:
            out.append({"id": f.parent.name, "error": "unreadable summary.json"})
            continue
        s = doc.get("summary") or {}
        st = doc.get("settings") or {}
        keep = ("asr", "ci_low", "ci_high", "fails", "passes", "total", "probes")
        out.append({"id": doc.get("id", f.parent.name), "model": st.get("model"), "suite": st.get("suite"),
                    "generations": st.get("generations"), "responder": st.get("responder"), "started_at": doc.get("started_at"),
                    "ended_at": doc.get("ended_at"), "device": doc.get("device"), "simulated": doc.get("simulated"),
                    "wall_s": doc.get("wall_s"), "outputs": doc.get("outputs"), "fail_at": s.get("fail_at"),
                    "overall": {k: (s.get("overall") or {}).get(k) for k in keep},
                    "families": {fam: {k: v.get(k) for k in keep} for fam, v in (s.get("families") or {}).items()},
                    "gate": doc.get("gate"), "gate_enforced": doc.get("gate_enforced")})
    return sorted(out, key=lambda r: r.get("started_at") or "", reverse=True)


def drift_rows() -> dict:
    root = workspace().evals
    model, data = [], []
    for f in sorted(root.glob("*/drift_*.json")) if root.is_dir() else []:
        doc = _read_json(f)
        if doc is None:
            model.append({"file": f.name, "eval_id": f.parent.name, "error": "unreadable report"})
            continue
        model.append({"eval_id": doc.get("current_eval_id", f.parent.name), "baseline": doc.get("baseline"),
                      "baseline_eval_id": doc.get("baseline_eval_id"), "alarm": doc.get("alarm"),
                      "n_alarms": doc.get("n_alarms"), "missing_tasks": doc.get("missing_tasks"),
                      "modified_at": f.stat().st_mtime,
                      "comparisons": [{k: c.get(k) for k in ("task", "metric", "baseline", "current", "delta",
                                                             "higher_is_better", "threshold_abs", "threshold_rel",
                                                             "significance", "alarm")}
                                      for c in doc.get("comparisons") or []]})
    for f in sorted(root.glob("drift-data-*/report.json")) if root.is_dir() else []:
        doc = _read_json(f)
        if doc is None:
            data.append({"id": f.parent.name, "error": "unreadable report"})
            continue
        data.append({"id": f.parent.name, "kind": doc.get("kind"), "reference": doc.get("reference"),
                     "current": doc.get("current"), "halves_seed": doc.get("halves_seed"),
                     "n_reference": doc.get("n_reference"), "n_current": doc.get("n_current"),
                     "n_features": doc.get("n_features"), "n_drifted": doc.get("n_drifted"),
                     "share_drifted": doc.get("share_drifted"), "dataset_drift": doc.get("dataset_drift"),
                     "drift_share_threshold": doc.get("drift_share_threshold"), "modified_at": f.stat().st_mtime,
                     "features": [{k: x.get(k) for k in ("feature", "kind", "test", "statistic", "threshold", "drifted", "psi",
                                                                 "psi_level", "reference_mean", "current_mean")}
                                  for x in doc.get("features") or [] if isinstance(x, dict)]})
    return {"model": sorted(model, key=lambda r: r.get("modified_at") or 0, reverse=True),
            "data": sorted(data, key=lambda r: r.get("modified_at") or 0, reverse=True)}


RELEASE_DIRS_SKIPPED = {"cache", "work", "bench"}


def release_rows(verify: bool = False) -> list[dict]:
    """Every bundle under $ZP_HOME/releases/ (a directory with release.json), newest first."""
    root = workspace().root / "releases"
    out = []
    for f in sorted(root.glob("*/release.json")) if root.is_dir() else []:
        if f.parent.name in RELEASE_DIRS_SKIPPED:
            continue
        doc = _read_json(f)
        if doc is None:
            out.append({"release_id": f.parent.name, "error": "unreadable release.json"})
            continue
        gates = doc.get("gates") or []
        bias = next((g for g in gates if g.get("name") == "bias"), None)
        row = {"release_id": doc.get("release_id", f.parent.name), "created_at": doc.get("created_at"),
               "decision": doc.get("decision"), "passed": doc.get("passed"), "bundle": str(f.parent),
               "checkpoint": doc.get("checkpoint"), "baseline": doc.get("baseline"), "device": doc.get("device"),
               "simulated": doc.get("simulated"), "policy_source": doc.get("policy_source"),
               "gates": [{k: g.get(k) for k in ("name", "passed", "rule", "reason", "reused", "wall_s")} for g in gates],
               "bias": {k: (bias.get("figures") or {}).get(k) for k in ("baseline_model", "categories", "sentiment_gap")}
               if bias else None,
               "harms_checklist": doc.get("harms_checklist"), "verified": None}
        if verify:
            pub = key_paths()[1]
            try:
                rep = verify_bundle(f.parent, pub if pub.is_file() else None)
                row["verified"] = {"ok": rep["ok"], "key_trusted": rep["key_trusted"],
                                   "failed": [c for c in rep["checks"] if not c["ok"]]}
            except BundleError as e:
                row["verified"] = {"ok": False, "key_trusted": False, "failed": [{"check": "bundle", "detail": str(e)}]}
        out.append(row)
    return sorted(out, key=lambda r: r.get("created_at") or "", reverse=True)


def dataset_checks(name: str) -> dict:
    """The approval policy applied to the manifest entry as it stands (no file re-hash: approval does that)."""
    ds = dict(gov.get_dataset(name), name=name)
    pol, src = load_policy()
    checks = gov.evaluate(ds, pol)
    worst = "deny" if any(c["outcome"] == "deny" for c in checks) else \
        "review" if any(c["outcome"] == "review" for c in checks) else "pass"
    return {"name": name, "dataset_sha256": ds.get("sha256"), "policy_version": pol.version, "policy_source": str(src),
            "checks": [{k: c.get(k) for k in ("rule", "outcome", "detail")} for c in checks], "would_approve": worst,
            "note": "file hashes are re-checked when the approval is recorded"}


# ---- routes ------------------------------------------------------------------------------------------------------
def add_ui_routes(app, store, executor, *, viewer, approver) -> None:
    files = static_files()

    @app.get("/", include_in_schema=False)
    def index():
        if "index.html" not in files:
            raise HTTPException(404, "the control center is not in this build (src/zeropoint/api/static/ is missing); "
                                     "reinstall the package with its package data")
        return FileResponse(files["index.html"], media_type=TYPES[".html"], headers=PAGE_HEADERS)

    @app.get("/ui/{name}", include_in_schema=False)
    def asset(name: str):
        p = files.get(name)
        if p is None:
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(p, media_type=TYPES[p.suffix], headers=PAGE_HEADERS)

    @app.get("/v1/whoami", tags=["ui"])
    def whoami(p=viewer):
        return {"actor": p.actor, "role": p.role, "token_id": p.token_id,
                "can": {r: p.can(r) for r in RANK}}

    @app.get("/v1/overview", tags=["ui"])
    def overview(p=viewer):
        from ..scope import device_is_simulated, device_name  # tinygrad: not at server start
        dev = device_name()
        running = []
        for job in store.running():
            runs = []
            for rid in find_runs(job):
                row = last_step(workspace().runs / rid)
                runs.append({"id": rid, "step": row.get("step") if row else None, "loss": row.get("loss") if row else None,
                             "tokens_per_s": row.get("tokens_per_s") if row else None})
            running.append(dict(job.to_dict(), runs=runs))
        queued = list(reversed(store.list("queued", 100, 0)))   # oldest first: the order they will start in
        return {"appliance_id": appliance_id(), "version": version_info(), "device": dev,
                "device_simulated": device_is_simulated(dev), "cpu": cpu_facts(),
                "executor": {"name": executor.name, "max_concurrent": executor.max_concurrent,
                             "alive": executor.alive()} if executor is not None else None,
                "counts": store.counts(), "queue": [j.to_dict() for j in queued], "running": running,
                "workspace": str(workspace().root)}

    @app.get("/v1/runs/{run_id}/metrics", tags=["runs"],
             responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}})
    async def run_metrics(run_id: str, request: Request, offset: int = Query(0, ge=0, le=MAX_OFFSET),
                          follow: bool = Query(False, description="stream rows as server-sent events until the run ends"),
                          timeout_s: float = Query(3600, gt=0, le=86400), p=viewer):
        d = run_dir_or_404(run_id)
        path = d / "metrics.jsonl"
        if not _row_start(path, offset):
            raise HTTPException(400, f"offset {offset} is not at the start of a row of {d.name}/metrics.jsonl; pass 0, "
                                     "a next_offset this route returned, or the id of the last event received")
        if not follow:
            data = b""
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            end = data.rfind(b"\n") + 1          # never hand out a half-written last line
            rows = [json.loads(x) for x in data[:end].splitlines() if x.strip()]
            return JSONResponse({"run": d.name, "status": _run_status(d), "rows": rows, "next_offset": offset + end})
        return StreamingResponse(_follow_metrics(d, offset, timeout_s, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/runs/{run_id}/checkpoints", tags=["runs"])
    def run_checkpoints(run_id: str, verify: bool = Query(False, description="re-hash every file against its manifest"),
                        p=viewer):
        d = run_dir_or_404(run_id)
        return {"run": d.name, "checkpoints": checkpoint_rows(d, verify)}

    @app.get("/v1/runs/{run_id}/perf", tags=["runs"])
    def run_perf(run_id: str, p=viewer):
        d = run_dir_or_404(run_id)
        doc = _read_json(d / "perf.json")
        if doc is None:
            status = _run_status(d)
            why = ("the run is still going; perf.json is written when it ends" if status == "running"
                   else "this run has no perf.json (not a training run, or it ended before the perf report); "
                        f"build one with `zpctl perf report {d.name}`")
            return {"run": d.name, "perf": None, "reason": why}
        doc.pop("per_step", None)
        return {"run": d.name, "perf": doc, "reason": None}

    @app.get("/v1/compare", tags=["runs"])
    def runs_compare(runs: list[str] = Query(..., description="two or more run ids (repeat the parameter)"), p=viewer):
        if not 2 <= len(runs) <= 8:
            raise HTTPException(422, "compare takes 2 to 8 runs: /v1/compare?runs=A&runs=B")
        return compare_runs([run_dir_or_404(r).name for r in runs])

    @app.get("/v1/datasets/{name}/checks", tags=["datasets"])
    def datasets_checks(name: str, p=viewer):
        safe_name(name, "dataset name")
        try:
            return dataset_checks(name)
        except gov.UnknownDataset as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/v1/redteam", tags=["ui"])
    def redteam_list(p=viewer):
        return {"reports": redteam_rows()}

    @app.get("/v1/drift", tags=["ui"])
    def drift_list(p=viewer):
        return drift_rows()

    @app.get("/v1/releases", tags=["ui"])
    def releases_list(verify: bool = Query(False, description="re-verify each bundle (signature, hashes, audit chain)"),
                      p=viewer):
        return {"releases": release_rows(verify)}


def _row_start(path: Path, offset: int) -> bool:
    """Is `offset` 0, past the end, or just after a newline of the file (where a row starts)?"""
    if offset == 0 or not path.exists():
        return True
    with open(path, "rb") as f:
        f.seek(offset - 1)
        prev = f.read(1)
    return prev in (b"", b"\n")


async def _follow_metrics(d: Path, offset: int, timeout_s: float, request: Request):
    """Server-sent events: `event: metric` per metrics.jsonl row (id = byte offset to resume from), then
    `event: end` with the run's final status once it has ended and every row has been sent."""
    path = d / "metrics.jsonl"
    deadline = time.monotonic() + timeout_s
    yield f"event: hello\ndata: {json.dumps({'run': d.name, 'offset': offset})}\n\n"
    while True:
        chunk = b""
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(1 << 16)
        end = chunk.rfind(b"\n") + 1
        if end:
            for raw in chunk[:end].splitlines(keepends=True):
                offset += len(raw)
                if raw.strip():
                    try:
                        row = json.loads(raw)
                    except ValueError:
                        continue
                    yield f"id: {offset}\nevent: metric\ndata: {json.dumps(row)}\n\n"
            continue
        status = await anyio.to_thread.run_sync(_run_status, d)
        if status in TERMINAL or status == "corrupt":
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        if time.monotonic() > deadline or await request.is_disconnected():
            yield "event: timeout\ndata: {}\n\n"
            return
        await asyncio.sleep(0.25)
