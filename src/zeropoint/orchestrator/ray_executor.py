"""Ray executor: the same jobs, handed to a Ray cluster through the Ray Jobs API.

Each job becomes one Ray job whose entrypoint is the very `zpctl` command the local executor would run, with
submission id = job id (so a server that crashed between submitting and recording can re-attach instead of
submitting twice). The runtime env carries ZP_HOME, ZP_JOB_ID and PYTHONPATH to the project; GPUs, CPUs and
memory per job come from the job's `resources`. Status, logs and stop are mapped back onto the job states:
SUCCEEDED -> succeeded, FAILED -> failed, STOPPED -> cancelled (when asked) or interrupted.

The cluster keeps running jobs when this server dies, so `recover()` re-attaches to them rather than marking them
interrupted. Assumes the workers see the same filesystem for $ZP_HOME (see docs/scale-out.md).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from ..clock import utcnow
from ..workspace import atomic_write_bytes
from .executor import Executor, find_runs, job_command, job_env
from .store import Job, SqliteStore

RAY_STATES = {"SUCCEEDED": "succeeded", "FAILED": "failed", "STOPPED": "cancelled"}
ENV_KEYS = ("ZP_HOME", "ZP_JOB_ID", "ZP_ACTOR", "PYTHONPATH", "PYTHONUNBUFFERED", "DEV", "ZP_ASSETS", "ZP_DATA_ROOT")


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, store: SqliteStore, address: str, max_concurrent: int = 2, poll_s: float = 1.0,
                 term_grace_s: float = 10.0):
        super().__init__(store, max_concurrent=max_concurrent, poll_s=poll_s, term_grace_s=term_grace_s)
        self.address = address
        self._client = None
        self._active: dict[str, str] = {}        # job id -> Ray submission id
        self._stop_sent: set[str] = set()

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient
            self._client = JobSubmissionClient(self.address)
        return self._client

    def active(self) -> int:
        return len(self._active)

    def launch(self, job: Job) -> None:
        env = job_env(job)
        runtime_env = {"env_vars": {k: env[k] for k in ENV_KEYS if k in env}}
        kw = {}
        if job.resources.get("num_gpus"):
            kw["entrypoint_num_gpus"] = float(job.resources["num_gpus"])
        if job.resources.get("num_cpus"):
            kw["entrypoint_num_cpus"] = float(job.resources["num_cpus"])
        if job.resources.get("memory"):
            kw["entrypoint_memory"] = int(job.resources["memory"])
        self._log(job, f"submitting to Ray at {self.address}: {shlex.join(job_command(job))}")
        try:
            sid = self.client.submit_job(entrypoint=shlex.join(job_command(job)), submission_id=job.id,
                                         runtime_env=runtime_env, metadata={"zeropoint_job": job.id}, **kw)
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise
            sid = job.id   # submitted before a crash: attach to it, never submit twice
        self.store.update(job.id, external_id=sid)
        self._active[job.id] = sid

    def _log(self, job: Job, line: str) -> None:
        p = Path(job.run_dir) / "job.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "ab") as f:
            f.write(f"[zeropoint] {utcnow()} {line}\n".encode())

    def _sync_logs(self, job: Job, sid: str) -> None:
        """Ray returns the whole driver log; keep our header lines and replace the Ray part atomically."""
        try:
            text = self.client.get_job_logs(sid)
        except Exception:
            return
        p = Path(job.run_dir) / "ray.log"
        atomic_write_bytes(p, text.encode("utf-8", "replace"))
        head = b""
        jl = Path(job.run_dir) / "job.log"
        if jl.exists():
            head = b"".join(l for l in jl.read_bytes().splitlines(keepends=True) if l.startswith(b"[zeropoint]"))
        atomic_write_bytes(jl, head + text.encode("utf-8", "replace"))

    def reap(self) -> None:
        for job_id, sid in list(self._active.items()):
            try:
                info = self.client.get_job_info(sid)
            except Exception as e:
                if "does not exist" in str(e) or "404" in str(e):
                    job = self.store.get(job_id)
                    self._active.pop(job_id)
                    self.store.transition(job_id, ["running"], "interrupted", ended_at=utcnow(),
                                          error=f"Ray no longer knows submission {sid}")
                continue
            job = self.store.get(job_id)
            self._sync_logs(job, sid)
            st = str(getattr(info.status, "value", info.status))
            if st not in RAY_STATES:
                continue
            state = RAY_STATES[st]
            if state == "cancelled" and not job.cancel_requested:
                state = "interrupted"
            rc = getattr(info, "driver_exit_code", None)
            err = None if state == "succeeded" else f"ray {st}: {info.message}"
            self._sync_logs(job, sid)
            self._log(job, f"Ray submission {sid} ended {st} (driver exit code {rc})")
            self._active.pop(job_id)
            self._stop_sent.discard(job_id)
            job.pid = None
            self.store.transition(job_id, ["running"], state, ended_at=utcnow(), exit_code=rc, error=err,
                                  run_ids=find_runs(job))

    def terminate(self, job: Job) -> None:
        sid = self._active.get(job.id)
        if sid is None or job.id in self._stop_sent:
            return
        self.client.stop_job(sid)    # Ray sends SIGTERM, then SIGKILL after its own grace period
        self._stop_sent.add(job.id)
        self._log(job, f"stop requested for Ray submission {sid}")

    def recover(self) -> list[str]:
        """Jobs the cluster is still running are re-attached, not interrupted."""
        for job in self.store.running(self.name):
            self._active[job.id] = job.external_id or job.id
        return []
