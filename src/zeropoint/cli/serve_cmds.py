"""`zpctl serve`, `zpctl token ...`, `zpctl jobs ...`: the API server and the job queue from the command line.

`jobs` commands work on the same store the server's executor reads, so a job submitted here is run by a running
`zpctl serve` (the store is the queue). Every mutating command is appended to the audit log like an API call.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import JsonOpt, SetOpt, console, handle_errors, print_json

token_app = typer.Typer(help="API tokens (stored hashed; the secret is shown once).", no_args_is_help=True)
jobs_app = typer.Typer(help="The job queue: submit, list, follow and cancel jobs.", no_args_is_help=True)

STATE_COLORS = {"queued": "white", "running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "yellow",
                "interrupted": "yellow"}


def _audit(action: str, resource: str, details: dict, outcome: str = "ok") -> None:
    from ..governance.audit import append_event
    append_event(None, action, resource, dict(details, via="cli"), outcome)


def _store():
    from ..orchestrator.store import open_store
    return open_store()


def _kv(items: list[str] | None) -> dict:
    from ..config import load_yaml_text
    out = {}
    for it in items or []:
        if "=" not in it:
            raise typer.BadParameter(f"--arg {it!r}: expected key=value")
        k, v = it.split("=", 1)
        out[k] = load_yaml_text(v, f"--arg {k}") if v else ""
    return out


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.add_typer(jobs_app, name="jobs")

    @app.command()
    @handle_errors
    def serve(host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
              port: int = typer.Option(8080, help="TCP port."),
              executor: Optional[str] = typer.Option(None, help="local | ray (default: $ZP_EXECUTOR or local)."),
              max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent",
                                                           help="Jobs run at once (default $ZP_MAX_CONCURRENT_JOBS or 2)."),
              ray_address: Optional[str] = typer.Option(None, help="Ray dashboard URL (default $ZP_RAY_ADDRESS)."),
              data_root: Optional[Path] = typer.Option(None, "--data-root",
                                                       help="Directory request paths are confined to "
                                                            "(default $ZP_DATA_ROOT, else $ZP_HOME)."),
              log_level: str = typer.Option("info", help="uvicorn log level.")):
        """Run the HTTP API and the job executor. Every route but /healthz and /readyz needs a bearer token
        (`zpctl token create`); the schema is at /openapi.json.

        Paths in requests must lie under the data root (--data-root, $ZP_DATA_ROOT, else $ZP_HOME),
        never in $ZP_HOME's keys/, jobs/ or datasets/; bodies are capped at $ZP_API_MAX_BODY bytes
        (1 MiB); jobs and tokens live in $ZP_HOME/jobs/jobs.db (SQLite, WAL). Connections: request
        headers must arrive within $ZP_API_HEADER_TIMEOUT_S (10 s), at most $ZP_API_MAX_CONN_PER_IP (64)
        open per client address."""
        from ..api.server import serve as run
        run(host, port, executor=executor, max_concurrent=max_concurrent, ray_address=ray_address, log_level=log_level,
            data_root=data_root)


@token_app.command("create")
@handle_errors
def token_create(role: str = typer.Option(..., help="viewer | submitter | approver | admin"),
                 name: str = typer.Option("default", help="A label for the token (who or what uses it)."),
                 json_out: bool = JsonOpt):
    """Create a token. The secret is printed once; only its salted SHA-256 is stored."""
    from ..orchestrator.jobs import safe_name
    tok, secret = _store().create_token(safe_name(name, "token name"), role, created_by=_actor())
    _audit("token.create", f"token:{tok.id}", {"name": tok.name, "role": tok.role})
    if json_out:
        return print_json({**tok.__dict__, "token": secret})
    console.print(f"token {tok.id} ({tok.name}, role {tok.role}):")
    console.print(secret, highlight=False)
    console.print("[dim]store it now: it is not shown again[/]")


@token_app.command("list")
@handle_errors
def token_list(json_out: bool = JsonOpt):
    """List tokens (ids, names, roles; never secrets)."""
    toks = _store().list_tokens()
    if json_out:
        return print_json([t.__dict__ for t in toks])
    t = Table("id", "name", "role", "created", "by", "revoked")
    for k in toks:
        t.add_row(k.id, k.name, k.role, k.created_at, k.created_by, k.revoked_at or "-")
    console.print(t)


@token_app.command("revoke")
@handle_errors
def token_revoke(token_id: str = typer.Argument(..., help="Token id from `zpctl token list`."), json_out: bool = JsonOpt):
    """Revoke a token: requests with it get 401 from then on."""
    from ..errors import ZeropointError
    ok = _store().revoke_token(token_id)
    _audit("token.revoke", f"token:{token_id}", {}, "ok" if ok else "rejected")
    if not ok:
        raise ZeropointError(f"no live token {token_id!r}; see `zpctl token list`")
    print_json({"revoked": token_id}) if json_out else console.print(f"revoked token {token_id}")


def _actor() -> str:
    from ..governance.audit import default_actor
    return default_actor()


@jobs_app.command("submit")
@handle_errors
def jobs_submit(kind: str = typer.Argument(..., help="train | resume | status (see `zpctl jobs kinds`)."),
                config: Optional[Path] = typer.Argument(None, help="Recipe YAML for train jobs."),
                set_: Optional[List[str]] = SetOpt,
                arg: Optional[List[str]] = typer.Option(None, "--arg", help="Kind argument key=value, e.g. run=ID."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Validate and run the job machinery, no compute."),
                wait: bool = typer.Option(False, "--wait", help="Wait until the job ends (needs a running `zpctl serve`)."),
                json_out: bool = JsonOpt):
    """Validate and queue a job; a running `zpctl serve` picks it up."""
    from ..config import read_yaml
    from ..orchestrator.jobs import submit
    args = _kv(arg)
    if set_:
        args["overrides"] = list(set_)
    raw = read_yaml(config) if config else None
    store = _store()
    job, _ = submit(store, kind, submitter=_actor(), config=raw, args=args, dry_run=dry_run)
    _audit("job.submit", f"job:{job.id}", {"kind": kind, "config_sha256": job.config_sha256,
                                           "inputs_sha256": job.inputs_sha256, "dry_run": dry_run})
    if wait:
        job = _wait(store, job.id)
    if json_out:
        return print_json(job.to_dict())
    console.print(f"job {job.id} [{STATE_COLORS.get(job.state, 'white')}]{job.state}[/]: zpctl {' '.join(job.argv)}",
                  highlight=False)


def _wait(store, job_id: str):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as prog:
        task = prog.add_task(f"job {job_id}")
        while True:
            job = store.get(job_id)
            prog.update(task, description=f"job {job_id}: {job.state}")
            if job.terminal:
                return job
            time.sleep(0.5)


@jobs_app.command("kinds")
@handle_errors
def jobs_kinds(json_out: bool = JsonOpt):
    """Job kinds this build can run."""
    from ..orchestrator.jobs import KINDS
    print_json(sorted(KINDS)) if json_out else console.print(", ".join(sorted(KINDS)))


@jobs_app.command("ls")
@handle_errors
def jobs_ls(state: Optional[str] = typer.Option(None, help="Only jobs in this state."),
            limit: int = typer.Option(50, help="At most this many (newest first)."), json_out: bool = JsonOpt):
    """List jobs, newest first."""
    store = _store()
    jobs = store.list(state, limit)
    if json_out:
        return print_json({"jobs": [j.to_dict() for j in jobs], "counts": store.counts()})
    t = Table("job", "kind", "state", "submitter", "created", "exit", "runs")
    for j in jobs:
        t.add_row(j.id, j.kind + (" (dry-run)" if j.dry_run else ""), f"[{STATE_COLORS.get(j.state, 'white')}]{j.state}[/]",
                  j.submitter, j.created_at, "-" if j.exit_code is None else str(j.exit_code), ", ".join(j.run_ids) or "-")
    console.print(t)
    console.print(" ".join(f"{k}={v}" for k, v in store.counts().items()), highlight=False)


def _job(store, job_id: str):
    from ..errors import ZeropointError
    from ..orchestrator.jobs import safe_name
    job = store.get(safe_name(job_id, "job id"))
    if job is None:
        raise ZeropointError(f"no job {job_id!r}; list jobs with `zpctl jobs ls`")
    return job


@jobs_app.command("show")
@handle_errors
def jobs_show(job_id: str, json_out: bool = JsonOpt):
    """One job's record and the runs it made."""
    from ..orchestrator.executor import job_run_status
    job = _job(_store(), job_id)
    d = dict(job.to_dict(), runs=job_run_status(job))
    if json_out:
        return print_json(d)
    t = Table("field", "value", show_header=False)
    for k in ("id", "kind", "state", "submitter", "argv", "config_sha256", "inputs_sha256", "dry_run", "executor",
              "created_at", "started_at", "ended_at", "exit_code", "pid", "external_id", "run_dir", "error"):
        t.add_row(k, json.dumps(d[k]) if isinstance(d[k], (list, dict)) else str(d[k]))
    for r in d["runs"]:
        t.add_row("run", f"{r['id']} ({r['status']})")
    console.print(t)


@jobs_app.command("logs")
@handle_errors
def jobs_logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends.")):
    """Print a job's captured output (stdout and stderr of its process)."""
    import sys
    store = _store()
    job = _job(store, job_id)
    path, offset = Path(job.run_dir) / "job.log", 0
    while True:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
        if not follow or store.get(job.id).terminal:
            if follow and path.exists() and path.stat().st_size > offset:
                continue
            return
        time.sleep(0.5)


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: str, json_out: bool = JsonOpt):
    """Cancel a job: a queued one at once, a running one by SIGTERM (then SIGKILL) from its executor."""
    from ..errors import ZeropointError
    from ..orchestrator.executor import request_cancel
    store = _store()
    job = _job(store, job_id)
    if job.terminal:
        raise ZeropointError(f"job {job.id} is already {job.state}")
    job = request_cancel(store, job.id)
    _audit("job.cancel", f"job:{job.id}", {"inputs_sha256": job.inputs_sha256})
    print_json(job.to_dict()) if json_out else console.print(f"job {job.id}: {job.state}"
                                                             + (" (stop requested)" if job.state == "running" else ""))
