"""The HTTP API: every capability of the appliance behind bearer tokens, roles and the audit log.

`create_app(store, executor)` builds the FastAPI app; `zpctl serve` runs it under uvicorn. Three things happen
to every request before a handler sees it (`Guard`, a plain ASGI middleware):
- bodies over the limit are refused with 413 (by Content-Length, and by counting a streamed body);
- a path with a `..` segment (also percent-encoded) is refused with 400;
- more than one `Authorization` header is refused with 400 (the identity must be unambiguous); the principal
  resolved here is the one handlers authorise and the one the audit log names;
- a JSON body that holds a non-finite number (NaN, Infinity, 1e400), a lone UTF-16 surrogate or nesting deeper
  than `config.MAX_DEPTH` is refused with 400 naming the key, before any handler sees it;
- a mutating request (POST/PUT/PATCH/DELETE) or a denied one (400 path, 401, 403, 413) is appended to the
  hash-chained audit log with the actor, the action and the SHA-256 of the request body, plus whatever the
  handler added (config and dataset hashes) - before the response head goes out, so an answered request is a
  recorded one. Requests without a valid token are the exception: the first per client and window is recorded
  that way, the rest are counted into one summary event (`denials.py`), so a flood cannot fill the disk.
Handlers are plain functions over the library (orchestrator, evidence, governance): no logic lives here that
the CLI does not share.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, unquote

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..appliance.identity import version_info
from ..config import MAX_DEPTH, check_values
from ..errors import ConfigError, ZeropointError
from ..evidence import effective_status, list_runs, load_run, read_metrics
from ..governance.audit import append_event, read_events, verify_chain
from ..orchestrator import executor as ex
from ..orchestrator.jobs import KINDS, PathRejected, resubmit_resume, safe_name, submit
from ..orchestrator.store import STATES, Job, SqliteStore
from ..workspace import workspace
from .auth import RANK, Principal, resolve
from .datasets import add_dataset_routes
from .denials import DenialCoalescer
from .runs import MAX_OFFSET, last_step, run_dir_or_404
from .ui import add_ui_routes

MAX_BODY = int(os.environ.get("ZP_API_MAX_BODY", 1 << 20))   # 1 MiB: configs are small; data is added by path
_NO_PRINCIPAL = object()
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
TINYGRAD_LOCK = threading.Lock()   # handlers run in a thread pool; tinygrad's device state is process-global


# ---- audit -----------------------------------------------------------------------------------------------------
def audit(actor: str, action: str, resource: str, details: dict, outcome: str) -> None:
    append_event(actor, action, resource, details, outcome)


def _traversal(raw_path: bytes, query: bytes) -> str | None:
    """The offending piece if the path or a query value walks out with `..` (after percent-decoding, twice)."""
    path = raw_path.decode("latin-1")
    for _ in range(2):
        path = unquote(path)
    if "\x00" in path or any(seg == ".." for seg in path.replace("\\", "/").split("/")):
        return path
    for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        v = unquote(v)
        if "\x00" in v or ".." in v.replace("\\", "/").split("/"):
            return f"{k}={v}"
    return None


def body_problem(body: bytes, content_type: str | None) -> str | None:
    """Why a JSON request body cannot be accepted (not JSON, NaN/inf, lone surrogate, too deep), or None."""
    if not body or (content_type and "json" not in content_type.lower()):
        return None
    try:
        doc = json.loads(body)
    except RecursionError:
        return f"request body is nested more than {MAX_DEPTH} levels deep"
    except ValueError as e:    # includes invalid UTF-8
        return f"request body is not valid JSON ({e})"
    try:
        check_values(doc, "request body")
    except ConfigError as e:
        return str(e)
    return None


class Guard:
    def __init__(self, app, store: SqliteStore, max_body: int = MAX_BODY, denials: DenialCoalescer | None = None):
        self.app, self.store, self.max_body, self.denials = app, store, max_body, denials

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        n_auth = sum(k.lower() == b"authorization" for k, _ in scope["headers"])
        principal = None if n_auth > 1 else \
            await anyio.to_thread.run_sync(resolve, self.store, headers.get("authorization"))
        scope["zp_principal"] = principal   # handlers authorise exactly this identity (auth.principal dependency)
        actor = principal.actor if principal else ("anonymous" if "authorization" not in headers else "invalid-token")
        note = scope["zp_audit"] = {"details": {}, "action": None, "resource": None, "outcome": None}
        status = {"code": 500}
        h = hashlib.sha256()

        async def record():
            """Append the audit event (mutating or denied requests) before the client sees the response."""
            code = status["code"]
            if not (method in MUTATING or code in (401, 403, 413) or note["outcome"] == "denied"):
                return
            outcome = note["outcome"] or ("denied" if code in (401, 403, 413) else "ok" if code < 400
                                          else "rejected" if code < 500 else "error")
            client = (scope.get("client") or [None])[0]
            if principal is None and self.denials is not None and not self.denials.admit(actor, client, method, path,
                                                                                            code):
                return   # counted into the client's coalesced denial event (denials.py)
            details = {"method": method, "path": path, "status": code, "inputs_sha256": h.hexdigest(),
                       "client": client, "role": principal.role if principal else None, **note["details"]}
            try:
                await anyio.to_thread.run_sync(audit, actor, note["action"] or f"api.{method.lower()}",
                                               note["resource"] or path, details, outcome)
            except Exception as e:   # never answer as if recorded when it was not
                print(f"zeropoint api: AUDIT APPEND FAILED for {method} {path}: {type(e).__name__}: {e}", file=sys.stderr)
                raise

        async def respond(code: int, msg: str, outcome: str, action: str):
            status["code"] = code
            note.update(outcome=outcome, action=action)
            await record()
            body = json.dumps({"error": msg}).encode()
            await send({"type": "http.response.start", "status": code,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        bad = _traversal(scope.get("raw_path") or path.encode(), scope.get("query_string", b""))
        declared = headers.get("content-length")
        if n_auth > 1:
            return await respond(400, f"{n_auth} Authorization headers; send exactly one Authorization header "
                                      "(`Authorization: Bearer <token>`)", "denied", "api.auth")
        if bad is not None:
            return await respond(400, f"path traversal refused: {bad!r}; names and paths must stay inside the data "
                                      "root", "denied", "api.path_traversal")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await respond(413, f"request body of {declared} bytes is over the {self.max_body}-byte limit; send "
                                      "a smaller config, or reference data by name/path instead of inlining it",
                                 "denied", "api.body_too_large")
        # read the body up front (bounded) so it can be hashed for the audit log, and so a streamed body without
        # Content-Length is held to the same limit
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await respond(413, f"request body over the {self.max_body}-byte limit", "denied",
                                     "api.body_too_large")
            chunks.append(chunk)
            h.update(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        if method in MUTATING and (problem := body_problem(body, headers.get("content-type"))):
            return await respond(400, problem, "denied", "api.invalid_body")
        replayed = {"done": False}
        held: dict = {}

        async def replay():
            if replayed["done"]:
                return await receive()
            replayed["done"] = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_wrap(message):
            # hold the response head until the audit record is written, so "answered" implies "recorded"
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                held["start"] = message
                return
            if "start" in held:
                await record()
                await send(held.pop("start"))
            await send(message)

        try:
            await self.app(scope, replay, send_wrap)
        except Exception:
            status["code"], note["outcome"] = 500, "error"
            await record()
            raise


# ---- request models --------------------------------------------------------------------------------------------
class JobRequest(BaseModel):
    kind: str = Field(description="job kind: " + " | ".join(sorted(KINDS)))
    config: Optional[dict[str, Any]] = Field(None, description="recipe config (same keys as the YAML for `zpctl train`)")
    config_path: Optional[str] = Field(None, description="YAML path relative to the data root (instead of config)")
    args: dict[str, Any] = Field(default_factory=dict, description="kind arguments, e.g. {'run': ID} for resume, "
                                                                   "{'overrides': ['train.lr=1e-3']} for train")
    dry_run: bool = Field(False, description="validate, create and run the job machinery without compute")
    dry_run_hold_s: float = Field(0.0, ge=0, le=30, description="dry-run jobs: seconds the job process stays alive")
    resources: dict[str, float] = Field(default_factory=dict, description="num_cpus, num_gpus, memory (Ray executor)")


# ---- app -------------------------------------------------------------------------------------------------------
def create_app(store: SqliteStore, executor: ex.Executor | None = None, *, max_body: int = MAX_BODY,
               manage_executor: bool = True, denial_window_s: float | None = None) -> FastAPI:
    started = time.time()
    window = float(os.environ.get("ZP_API_DENIAL_WINDOW_S", 10)) if denial_window_s is None else denial_window_s
    denials = DenialCoalescer(window, audit) if window > 0 else None

    async def flush_denials():
        while True:
            await asyncio.sleep(min(1.0, window / 2))
            try:
                await anyio.to_thread.run_sync(denials.flush)
            except Exception as e:   # keep flushing; the failure is the audit log's, and it is loud there too
                print(f"zeropoint api: AUDIT APPEND FAILED for a coalesced denial summary: {type(e).__name__}: {e}",
                      file=sys.stderr)

    async def lifespan(app):
        if executor is not None and manage_executor:
            app.state.recovered = executor.start()
        flusher = asyncio.create_task(flush_denials()) if denials is not None else None
        yield
        if flusher is not None:
            flusher.cancel()
            await anyio.to_thread.run_sync(denials.flush, True)   # no count is lost on a clean stop
        if executor is not None and manage_executor:
            executor.stop()

    # the schema is served by our own route so it sits behind auth like everything else but the probes
    app = FastAPI(title="Zeropoint API", version=__version__, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Jobs, runs, datasets, evals and audit of a Zeropoint appliance. Bearer token auth "
                              "(`zpctl token create`) on everything except /healthz and /readyz.")
    app.add_middleware(Guard, store=store, max_body=max_body, denials=denials)

    def note(request: Request, *, action: str, resource: str, outcome: str | None = None, **details) -> None:
        n = request.scope.get("zp_audit")
        if n is not None:
            n.update(action=action, resource=resource)
            if outcome:
                n["outcome"] = outcome
            n["details"].update(details)

    def principal(request: Request, authorization: Optional[str] = Header(None)) -> Principal:
        p = request.scope.get("zp_principal", _NO_PRINCIPAL)   # resolved once, by Guard: what is audited
        if p is _NO_PRINCIPAL:
            p = resolve(store, authorization)
        if p is None:
            note(request, action="api.auth", resource=request.url.path, outcome="denied",
                 reason="missing bearer token" if not authorization else "invalid or revoked token")
            raise HTTPException(401, "missing or invalid bearer token; create one with `zpctl token create --role viewer`"
                                     " and send `Authorization: Bearer <token>`", headers={"WWW-Authenticate": "Bearer"})
        return p

    def role(needed: str):
        def dep(request: Request, p: Principal = Depends(principal)) -> Principal:
            if not p.can(needed):
                note(request, action="api.authorize", resource=request.url.path, outcome="denied",
                     reason=f"role {p.role} is below {needed}")
                raise HTTPException(403, f"role {p.role!r} may not do this; it needs {needed!r} or higher "
                                         "(ask an admin for a token with that role)")
            return p
        return dep

    viewer, submitter, approver, admin = (Depends(role(r)) for r in RANK)

    @app.exception_handler(PathRejected)
    async def _path(request: Request, e: PathRejected):
        note(request, action="api.path_rejected", resource=request.url.path, outcome="denied", reason=str(e))
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(ConfigError)
    async def _config(request: Request, e: ConfigError):
        return JSONResponse({"error": str(e)}, status_code=422)

    @app.exception_handler(ZeropointError)
    async def _zp(request: Request, e: ZeropointError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        # FastAPI's own handler echoes each input back, and a NaN input cannot be rendered as JSON (a 500)
        problems = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)   # also the router's own 404/405: every error is {"error": ...}
    async def _http(request: Request, e: StarletteHTTPException):
        return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=getattr(e, "headers", None))

    # -- health (no auth) -------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    def healthz():
        return {"ok": True, "uptime_s": round(time.time() - started, 3)}

    @app.get("/readyz", tags=["health"])
    def readyz():
        problems = []
        try:
            store.counts()
        except Exception as e:
            problems.append(f"job store: {type(e).__name__}: {e}")
        if executor is not None and not executor.alive():
            problems.append(f"executor {executor.name} is not running")
        body = {"ready": not problems, "problems": problems, "executor": executor.name if executor else None,
                "executor_errors": executor.errors[-5:] if executor else []}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_schema(p: Principal = viewer):
        return app.openapi()

    # -- status -----------------------------------------------------------------------------------------------
    @app.get("/v1/status/version", tags=["status"])
    def status_version(p: Principal = viewer):
        return version_info()

    @app.get("/v1/status/health", tags=["status"])
    def status_health(p: Principal = viewer):
        with TINYGRAD_LOCK:   # tinygrad is not thread-safe: concurrent requests broke each other's device check
            from ..appliance.health import run_health  # tinygrad: loaded when a check runs, not at server start
            return run_health()

    @app.get("/v1/status/diag", tags=["status"])
    def status_diag(parity: bool = Query(False, description="also run the matmul parity check (seconds of compute)"),
                    p: Principal = viewer):
        with TINYGRAD_LOCK:
            from ..appliance.diag import run_diag  # tinygrad: loaded when a check runs, not at server start
            return run_diag(with_parity=parity)

    # -- jobs -------------------------------------------------------------------------------------------------
    def job_view(job: Job) -> dict:
        d = job.to_dict()
        d["runs"] = ex.job_run_status(job)
        return d

    def get_job(job_id: str) -> Job:
        job = store.get(safe_name(job_id, "job id"))
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}; list jobs with GET /v1/jobs")
        return job

    @app.post("/v1/jobs", status_code=201, tags=["jobs"])
    def jobs_submit(req: JobRequest, request: Request, p: Principal = submitter,
                    idempotency_key: Optional[str] = Header(None, description="retry-safe: same key, same job")):
        note(request, action="job.submit", resource=f"job-kind:{req.kind}", kind=req.kind, dry_run=req.dry_run,
             idempotency_key=idempotency_key)
        job, created = submit(store, req.kind, submitter=p.actor, config=req.config, config_path=req.config_path,
                              args=req.args, dry_run=req.dry_run, dry_run_hold_s=req.dry_run_hold_s,
                              resources=req.resources, idempotency_key=idempotency_key,
                              executor=executor.name if executor else "local")
        note(request, action="job.submit", resource=f"job:{job.id}", job_id=job.id, created=created,
             config_sha256=job.config_sha256, job_inputs_sha256=job.inputs_sha256)
        if executor is not None:
            executor.wake()
        return JSONResponse(job_view(job), status_code=201 if created else 200)

    @app.get("/v1/jobs", tags=["jobs"])
    def jobs_list(state: Optional[str] = Query(None, description=" | ".join(STATES)),
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                  p: Principal = viewer):
        if state is not None and state not in STATES:
            raise HTTPException(422, f"unknown state {state!r}; one of {', '.join(STATES)}")
        return {"jobs": [j.to_dict() for j in store.list(state, limit, offset)], "counts": store.counts(),
                "limit": limit, "offset": offset}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def jobs_show(job_id: str, p: Principal = viewer):
        return job_view(get_job(job_id))

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    def jobs_cancel(job_id: str, request: Request, p: Principal = submitter):
        job = get_job(job_id)
        note(request, action="job.cancel", resource=f"job:{job.id}", job_inputs_sha256=job.inputs_sha256)
        if job.submitter != p.actor and not p.can("admin"):
            note(request, action="job.cancel", resource=f"job:{job.id}", outcome="denied",
                 reason="not the submitter and not admin")
            raise HTTPException(403, f"job {job.id} was submitted by {job.submitter}; only they or an admin may cancel it")
        if job.terminal:
            raise HTTPException(409, f"job {job.id} is already {job.state}")
        job = ex.request_cancel(store, job.id)
        if executor is not None:
            executor.wake()
        return job_view(job)

    @app.post("/v1/jobs/{job_id}/resume", status_code=201, tags=["jobs"])
    def jobs_resume(job_id: str, request: Request, p: Principal = submitter,
                    idempotency_key: Optional[str] = Header(None)):
        """Queue `zpctl resume RUN` for an interrupted or failed train job (continues from its last checkpoint)."""
        job = get_job(job_id)
        note(request, action="job.resume", resource=f"job:{job.id}", job_inputs_sha256=job.inputs_sha256)
        if job.submitter != p.actor and not p.can("admin"):
            note(request, action="job.resume", resource=f"job:{job.id}", outcome="denied",
                 reason="not the submitter and not admin")
            raise HTTPException(403, f"job {job.id} was submitted by {job.submitter}; only they or an admin may resume it")
        new, created = resubmit_resume(store, job.id, submitter=p.actor, idempotency_key=idempotency_key,
                                       executor=executor.name if executor else "local")
        note(request, action="job.resume", resource=f"job:{job.id}", new_job_id=new.id, created=created)
        if executor is not None:
            executor.wake()
        return JSONResponse(job_view(new), status_code=201 if created else 200)

    @app.get("/v1/jobs/{job_id}/logs", tags=["jobs"],
             responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}})
    async def jobs_logs(job_id: str, request: Request, offset: int = Query(0, ge=0, le=MAX_OFFSET),
                        follow: bool = Query(False, description="stream as server-sent events until the job ends"),
                        timeout_s: float = Query(3600, gt=0, le=86400), p: Principal = viewer):
        job = await anyio.to_thread.run_sync(get_job, job_id)
        log_path = Path(job.run_dir) / "job.log"
        if not follow and "text/event-stream" not in (request.headers.get("accept") or ""):
            data = b""
            if log_path.exists():
                with open(log_path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            return PlainTextResponse(data.decode("utf-8", "replace"),
                                     headers={"X-Log-Offset": str(offset + len(data)), "X-Job-State": job.state})
        return StreamingResponse(_follow(store, job.id, log_path, offset, timeout_s, request),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # -- runs, checkpoints, evals -------------------------------------------------------------------------------
    @app.get("/v1/runs", tags=["runs"])
    def runs_list(p: Principal = viewer):
        keys = ("id", "kind", "status", "command", "config_sha256", "started_at", "ended_at", "device", "simulated", "error")
        return {"runs": [{k: r.get(k) for k in keys} for r in list_runs()]}

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    def runs_show(run_id: str, p: Principal = viewer):
        r = load_run(run_dir_or_404(run_id).name)
        metrics = read_metrics(r)
        curve = []
        if r.loss_curve_path.exists():
            for row in csv.DictReader(r.loss_curve_path.open(encoding="utf-8")):
                rate = next(k for k in row if k.endswith("_per_s"))   # tokens_per_s, or images_per_s for vision
                curve.append({"step": int(row["step"]), "loss": float(row["loss"]), "step_ms": float(row["step_ms"]),
                              rate: float(row[rate]) if row[rate] else None})
        ckpts = sorted(q.name for q in r.checkpoints_dir.iterdir()) if r.checkpoints_dir.is_dir() else []
        return {"run": dict(r.record, status=effective_status(r.record)), "loss_curve": curve,
                "events": [m for m in metrics if m.get("event") != "step"], "checkpoints": ckpts}

    @app.get("/v1/checkpoints", tags=["runs"])
    def checkpoints_list(p: Principal = viewer):
        out = []
        root = workspace().runs
        for d in sorted(root.glob("*/checkpoints/*")) if root.is_dir() else []:
            files = [f for f in d.rglob("*") if f.is_file()] if d.is_dir() else [d]
            out.append({"run": d.parent.parent.name, "name": d.name, "path": str(d.relative_to(workspace().root)),
                        "bytes": sum(f.stat().st_size for f in files), "files": len(files),
                        "modified_at": max((f.stat().st_mtime for f in files), default=None)})
        return {"checkpoints": out}

    @app.get("/v1/evals", tags=["runs"])
    def evals_list(p: Principal = viewer):
        """Eval results (`evals/<id>/results.json`): per task, its metrics; samples stay on disk."""
        out = []
        root = workspace().evals
        for f in sorted(root.glob("*/results.json")) if root.is_dir() else []:
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                out.append({"id": f.parent.name, "error": f"unreadable results.json: {type(e).__name__}"})
                continue
            tasks = {name: {"metrics": t.get("metrics"), "n_docs": t.get("n_docs")}
                     for name, t in (rec.get("tasks") or {}).items()}
            out.append({"id": f.parent.name, "run_id": rec.get("run_id"), "model": rec.get("model"),
                        "ended_at": rec.get("ended_at"), "wall_s": rec.get("wall_s"), "tasks": tasks})
        baselines = sorted(q.stem for q in (root / "baselines").glob("*.json")) if (root / "baselines").is_dir() else []
        return {"evals": out, "baselines": baselines}

    # -- audit ------------------------------------------------------------------------------------------------
    @app.get("/v1/audit", tags=["audit"])
    def audit_list(offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(100, ge=1, le=1000), p: Principal = approver):
        events = read_events()
        return {"total": len(events), "offset": offset, "limit": limit, "events": events[offset:offset + limit]}

    @app.get("/v1/audit/verify", tags=["audit"])
    def audit_verify(p: Principal = approver):
        return verify_chain().as_dict()

    # -- metrics ----------------------------------------------------------------------------------------------
    @app.get("/metrics", tags=["status"], response_class=PlainTextResponse)
    def metrics(p: Principal = viewer):
        return PlainTextResponse(prometheus_text(store, executor), media_type="text/plain; version=0.0.4")

    _add_governance_routes(app, store, note, viewer, submitter, approver)
    add_ui_routes(app, store, executor, viewer=viewer, approver=approver)
    return app


def _add_governance_routes(app, store, note, viewer, submitter, approver) -> None:
    """Dataset routes over the governance library."""
    add_dataset_routes(app, note, viewer, submitter, approver)


async def _follow(store: SqliteStore, job_id: str, log_path: Path, offset: int, timeout_s: float, request: Request):
    """Server-sent events: each new log line as `data:`; `event: end` with the final state when the job ends."""
    deadline = time.monotonic() + timeout_s
    pending = b""
    while True:
        chunk = b""
        if log_path.exists():
            with open(log_path, "rb") as f:
                f.seek(offset)
                chunk = f.read(1 << 16)
        if chunk:
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            pos = offset - len(pending)
            pos -= sum(len(x) + 1 for x in lines)
            for line in lines:
                pos += len(line) + 1
                yield f"id: {pos}\ndata: {line.decode('utf-8', 'replace')}\n\n"   # id = offset to resume from
            continue
        job = await anyio.to_thread.run_sync(store.get, job_id)
        if job is None or job.terminal:
            if pending:
                yield f"data: {pending.decode('utf-8', 'replace')}\n\n"
            yield f"event: end\ndata: {json.dumps({'state': job.state if job else 'unknown', 'exit_code': job.exit_code if job else None})}\n\n"
            return
        if time.monotonic() > deadline or await request.is_disconnected():
            yield "event: timeout\ndata: {}\n\n"
            return
        await asyncio.sleep(0.25)


def prometheus_text(store: SqliteStore, executor: ex.Executor | None) -> str:
    counts = store.counts()
    out = ["# HELP zeropoint_jobs Jobs in the store by state.", "# TYPE zeropoint_jobs gauge"]
    out += [f'zeropoint_jobs{{state="{s}"}} {n}' for s, n in counts.items()]
    out += ["# HELP zeropoint_queue_length Jobs waiting to start.", "# TYPE zeropoint_queue_length gauge",
            f"zeropoint_queue_length {counts.get('queued', 0)}"]
    if executor is not None:
        out += ["# HELP zeropoint_executor_slots Concurrent jobs the executor runs.", "# TYPE zeropoint_executor_slots gauge",
                f'zeropoint_executor_slots{{executor="{executor.name}"}} {executor.max_concurrent}']
    out += ["# HELP zeropoint_job_tokens_per_second Tokens/s of the last logged step of each running job's run.",
            "# TYPE zeropoint_job_tokens_per_second gauge",
            "# HELP zeropoint_job_step Last logged step of each running job's run.", "# TYPE zeropoint_job_step gauge"]
    for job in store.running():
        for rid in ex.find_runs(job):
            row = last_step(workspace().runs / rid)
            if row is None:
                continue
            labels = f'job="{job.id}",run="{rid}",kind="{job.kind}"'
            if row.get("tokens_per_s") is not None:
                out.append(f"zeropoint_job_tokens_per_second{{{labels}}} {float(row['tokens_per_s'])}")
            out.append(f"zeropoint_job_step{{{labels}}} {int(row.get('step', 0))}")
    return "\n".join(out) + "\n"
