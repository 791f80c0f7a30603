"""Executors: take queued jobs from the store and run them, keeping job states true to what happened.

One dispatcher thread per server does everything in `tick()`: reap finished work, act on cancel requests, start
queued jobs up to the concurrency limit. All state changes are compare-and-set in the store, so a job cannot be
started twice or finished twice. `LocalExecutor` runs each job as a `zpctl` subprocess in its own process group
(cancel = SIGTERM to the group, then SIGKILL after a grace period); `RayExecutor` (ray_executor.py) hands
the same command to a Ray cluster.

Crash recovery: a job process gets SIGTERM when the server that started it dies (lifeline.py), so a SIGKILLed
server does not leave its jobs running unsupervised. The store still says `running`; on start, `recover()` ends
any process of such a job that is still alive and marks the job `interrupted`; queued jobs simply run.
"""
from __future__ import annotations

import abc
import json
import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..clock import utcnow
from ..evidence import effective_status
from ..workspace import workspace
from . import lifeline
from .jobs import dry_run_argv, zpctl_argv
from .store import Job, SqliteStore

SRC_ROOT = Path(__file__).resolve().parents[2]   # .../src, so `-m zeropoint.cli.main` works uninstalled


def job_env(job: Job) -> dict:
    env = dict(os.environ)
    env["ZP_HOME"] = str(workspace().root)
    env["ZP_JOB_ID"] = job.id
    env["ZP_ACTOR"] = job.submitter       # audit events the job writes name who submitted it
    env[lifeline.ENV] = str(os.getpid())  # the job dies with this server (lifeline.py)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def job_command(job: Job) -> list[str]:
    return dry_run_argv(job) if job.dry_run else zpctl_argv(job.argv)


def find_runs(job: Job) -> list[str]:
    """Evidence runs made by this job: run.json records the job id (ZP_JOB_ID), and the pid and host of its process."""
    out = []
    for rj in sorted(workspace().runs.glob("*/run.json")) if workspace().runs.is_dir() else []:
        try:
            rec = json.loads(rj.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        # pid + host + "started after the job" rules out a recycled pid's older runs
        stamps = [(rec.get("pid"), rec.get("started_at"))] + [(r.get("pid"), r.get("at")) for r in rec.get("resumes") or []]
        if rec.get("job_id") == job.id:
            out.append(rj.parent.name)
        elif job.pid and rec.get("host") == platform.node() and any(p == job.pid and (t or "") >= (job.started_at or "") for p, t in stamps):
            out.append(rj.parent.name)
    return out


def _pid_is_job(pid: int, job_id: str) -> bool:
    """Is `pid` still the process we started for this job (not a recycled pid)? Its environment names the job."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"ZP_JOB_ID={job_id}".encode() in env.split(b"\0")


class Executor(abc.ABC):
    """The polling loop shared by the local and Ray executors; each supplies how jobs launch, end and stop."""
    name = "base"

    def __init__(self, store: SqliteStore, max_concurrent: int = 2, poll_s: float = 0.1, term_grace_s: float = 10.0):
        self.store, self.max_concurrent, self.poll_s, self.term_grace_s = store, max(1, int(max_concurrent)), poll_s, term_grace_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def recover(self) -> list[str]: return []
    @abc.abstractmethod
    def active(self) -> int: ...
    @abc.abstractmethod
    def launch(self, job: Job) -> None: ...
    @abc.abstractmethod
    def reap(self) -> None: ...
    @abc.abstractmethod
    def terminate(self, job: Job) -> None: ...

    def start(self) -> list[str]:
        recovered = self.recover()
        self._thread = threading.Thread(target=self._loop, name=f"zp-{self.name}-executor", daemon=True)
        self._thread.start()
        return recovered

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:   # a bad tick must not kill the dispatcher; it is retried and reported by /readyz
                self.errors = (self.errors + [f"{utcnow()} {type(e).__name__}: {e}"])[-20:]
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def tick(self) -> None:
        self.reap()
        for job in self.store.cancel_pending():
            if job.state == "queued":
                self.store.transition(job.id, ["queued"], "cancelled", ended_at=utcnow(), error="cancelled before start")
            elif job.executor == self.name:
                self.terminate(job)
        free = self.max_concurrent - self.active()
        if free <= 0:
            return
        for job in self.store.next_queued(free):
            if not self.store.transition(job.id, ["queued"], "running", started_at=utcnow(), executor=self.name):
                continue   # someone else took it or it was cancelled meanwhile
            job.state, job.executor = "running", self.name
            try:
                self.launch(job)
            except Exception as e:
                self.store.transition(job.id, ["running"], "failed", ended_at=utcnow(),
                                      error=f"could not start: {type(e).__name__}: {e}")


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._procs: dict[str, tuple[subprocess.Popen, object]] = {}
        self._term_sent: dict[str, float] = {}
        self._shutting_down = False

    def active(self) -> int:
        return len(self._procs)

    def launch(self, job: Job) -> None:
        log_path = Path(job.run_dir) / "job.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        log.write(f"[zeropoint] {utcnow()} starting job {job.id}: {' '.join(job_command(job))}\n".encode())
        log.flush()
        try:
            p = subprocess.Popen(job_command(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=job_env(job), cwd=os.getcwd(), start_new_session=True)
        except BaseException:
            log.close()
            raise
        self._procs[job.id] = (p, log)
        self.store.update(job.id, pid=p.pid)

    def reap(self) -> None:
        for job_id, (p, log) in list(self._procs.items()):
            rc = p.poll()
            if rc is None:
                continue
            log.write(f"[zeropoint] {utcnow()} job {job_id} exited with code {rc}\n".encode())
            log.close()
            del self._procs[job_id]
            self._term_sent.pop(job_id, None)
            job = self.store.get(job_id)
            state = "cancelled" if job.cancel_requested else "succeeded" if rc == 0 else "failed"
            err = None if state == "succeeded" else "cancelled by request" if state == "cancelled" else f"exit code {rc}"
            if state == "failed" and self._shutting_down:
                state, err = "interrupted", f"server shut down while the job ran (exit code {rc})"
            self.store.transition(job_id, ["running"], state, ended_at=utcnow(), exit_code=rc, error=err,
                                  run_ids=find_runs(job))

    def terminate(self, job: Job) -> None:
        entry = self._procs.get(job.id)
        if entry is None:
            return
        p = entry[0]
        sent = self._term_sent.get(job.id)
        try:
            if sent is None:
                os.killpg(p.pid, signal.SIGTERM)   # the recipe catches it and marks its run interrupted
                self._term_sent[job.id] = time.monotonic()
            elif time.monotonic() - sent > self.term_grace_s:
                os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def recover(self) -> list[str]:
        out = []
        for job in self.store.running():
            if job.executor != self.name:
                continue
            note = "server stopped while the job ran (process gone)"
            if job.pid and _pid_is_job(job.pid, job.id):
                _kill_group(job.pid, self.term_grace_s)
                note = f"server stopped while the job ran; its orphaned process {job.pid} was terminated"
            runs = job_run_status(job)
            if runs:   # say what the job's own evidence shows, e.g. a run that finished before the restart
                note += "; its run(s): " + ", ".join(f"{r['id']} {r['status']}" for r in runs)
            if self.store.transition(job.id, ["running"], "interrupted", ended_at=utcnow(), error=note,
                                     run_ids=[r["id"] for r in runs]):
                out.append(job.id)
                with open(Path(job.run_dir) / "job.log", "ab") as log:
                    log.write(f"[zeropoint] {utcnow()} job {job.id} marked interrupted: {note}\n".encode())
        return out

    def stop(self, timeout: float = 5.0, terminate_running: bool = True) -> None:
        super().stop(timeout)
        if terminate_running:
            self._shutting_down = True
            for job_id, (p, log) in list(self._procs.items()):
                _kill_group(p.pid, self.term_grace_s, p)
                p.wait()
            self.reap()


def _kill_group(pid: int, grace: float, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group, SIGKILL whatever is left of it after `grace` seconds. `proc`: the group leader
    when it is our child - it must be reaped, or its zombie keeps the group alive for the whole grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def request_cancel(store: SqliteStore, job_id: str) -> Job | None:
    """Cancel a queued job now, or ask the executor that runs it to stop it. Returns the job, None if unknown."""
    job = store.get(job_id)
    if job is None or job.terminal:
        return job
    if job.state == "queued" and store.transition(job_id, ["queued"], "cancelled", ended_at=utcnow(),
                                                  cancel_requested=True, error="cancelled before start"):
        return store.get(job_id)
    store.update(job_id, cancel_requested=True)
    return store.get(job_id)


def job_run_status(job: Job) -> list[dict]:
    """The evidence runs of a job with their honest status (a SIGKILLed recipe reads as interrupted)."""
    out = []
    for rid in job.run_ids or find_runs(job):
        rj = workspace().runs / rid / "run.json"
        try:
            rec = json.loads(rj.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        out.append({"id": rid, "status": effective_status(rec), "kind": rec.get("kind")})
    return out
