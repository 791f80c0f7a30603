"""Local executor: real subprocesses, concurrency limit, failure, cancel, and crash recovery."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zeropoint.orchestrator.executor import LocalExecutor, request_cancel
from zeropoint.orchestrator.jobs import submit
from zeropoint.clock import utcnow
from zeropoint.orchestrator.store import Job, SqliteStore, new_job_id


@pytest.fixture
def store(zp_home):
    return SqliteStore()


def wait_terminal(store, ids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [store.get(i) for i in ids]
        if all(j.terminal for j in jobs):
            return jobs
        time.sleep(0.05)
    raise AssertionError(f"jobs not terminal after {timeout}s: {[(j.id, j.state) for j in jobs]}")


def test_runs_real_zpctl_and_dry_run_jobs_with_logs(store):
    ex = LocalExecutor(store, max_concurrent=2, poll_s=0.05)
    real, _ = submit(store, "status", submitter="t", args={"what": "version"})
    dry, _ = submit(store, "status", submitter="t", args={"what": "version"}, dry_run=True)
    ex.start()
    try:
        real, dry = wait_terminal(store, [real.id, dry.id])
    finally:
        ex.stop()
    assert real.state == "succeeded" and real.exit_code == 0 and real.pid
    log = (Path(real.run_dir) / "job.log").read_text()
    assert '"tinygrad": "0.14.0"' in log and "exited with code 0" in log     # zpctl version --json really ran
    dlog = (Path(dry.run_dir) / "job.log").read_text()
    assert dry.state == "succeeded" and "would run: zpctl version --json" in dlog and "dry-run ok" in dlog
    assert real.started_at and real.ended_at and real.ended_at >= real.started_at


def test_failed_process_is_failed_with_exit_code(store):
    job, _ = submit(store, "status", submitter="t", args={"what": "version"}, dry_run=True)
    (Path(job.run_dir) / "job.json").unlink()      # the dry-run process now has nothing to check: it must fail
    ex = LocalExecutor(store, max_concurrent=1, poll_s=0.05)
    ex.start()
    try:
        (job,) = wait_terminal(store, [job.id])
    finally:
        ex.stop()
    assert job.state == "failed" and job.exit_code not in (0, None) and "exit code" in job.error
    assert "FileNotFoundError" in (Path(job.run_dir) / "job.log").read_text()


def test_concurrency_limit_and_cancel(store):
    ex = LocalExecutor(store, max_concurrent=2, poll_s=0.05, term_grace_s=5)
    ids = [submit(store, "status", submitter="t", dry_run=True, dry_run_hold_s=20)[0].id for _ in range(3)]
    queued_cancel = submit(store, "status", submitter="t", dry_run=True)[0]
    assert request_cancel(store, queued_cancel.id).state == "cancelled"
    ex.start()
    try:
        deadline = time.monotonic() + 30
        while store.counts()["running"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(10):      # the third job must wait for a slot
            assert store.counts()["running"] == 2 and store.counts()["queued"] == 1
            time.sleep(0.05)
        running = store.list("running")
        # let the dry-run processes reach their hold (a SIGTERM before Python starts is an exit -15 just the same)
        deadline = time.monotonic() + 20
        while not all("holding" in (Path(j.run_dir) / "job.log").read_text() for j in running):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        for j in running:
            request_cancel(store, j.id)
            ex.wake()
        done = wait_terminal(store, [j.id for j in running], timeout=15)
        assert time.monotonic() - t0 < 10, "SIGTERM should stop a dry-run job well before its 20 s hold"
        for j in done:
            assert j.state == "cancelled" and j.exit_code == -15
            with pytest.raises(ProcessLookupError):
                os.kill(j.pid, 0)
        third = [i for i in ids if i not in {j.id for j in running}][0]
        deadline = time.monotonic() + 30
        while store.get(third).state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        request_cancel(store, third)
        ex.wake()
        wait_terminal(store, [third], timeout=15)
    finally:
        ex.stop()
    assert store.get(queued_cancel.id).started_at is None, "a job cancelled while queued never starts"


def test_recovery_marks_running_jobs_interrupted_and_ends_orphans(store, zp_home):
    # job A: "running" with a live orphan process (what a SIGKILLed server leaves); job B: running, process gone
    a = Job(id=new_job_id(), kind="status", argv=[], submitter="t", state="running", started_at=utcnow(),
            run_dir=str(zp_home / "jobs" / "a"))
    b = Job(id=new_job_id(), kind="status", argv=[], submitter="t", state="running", started_at=utcnow(),
            run_dir=str(zp_home / "jobs" / "b"), pid=2 ** 22 - 1)
    q = Job(id=new_job_id(), kind="status", argv=["version", "--json"], submitter="t", run_dir=str(zp_home / "jobs" / "q"))
    for j in (a, b, q):
        Path(j.run_dir).mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                              env=dict(os.environ, ZP_JOB_ID=a.id))
    a.pid = orphan.pid
    for j in (a, b, q):
        store.create(j)
    ex = LocalExecutor(store, max_concurrent=1, poll_s=0.05, term_grace_s=5)
    try:
        recovered = ex.recover()
        assert sorted(recovered) == sorted([a.id, b.id])
        assert orphan.wait(10) == -15, "the orphaned job process must be ended"
        ja, jb = store.get(a.id), store.get(b.id)
        assert ja.state == jb.state == "interrupted"
        assert "terminated" in ja.error and "process gone" in jb.error
        assert store.get(q.id).state == "queued", "queued jobs survive a restart untouched"
        assert "marked interrupted" in (Path(a.run_dir) / "job.log").read_text()
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_graceful_shutdown_marks_running_jobs_interrupted(store):
    ex = LocalExecutor(store, max_concurrent=1, poll_s=0.05, term_grace_s=5)
    job, _ = submit(store, "status", submitter="t", dry_run=True, dry_run_hold_s=20)
    ex.start()
    deadline = time.monotonic() + 30
    while "holding" not in ((Path(job.run_dir) / "job.log").read_text() if (Path(job.run_dir) / "job.log").exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ex.stop()
    job = store.get(job.id)
    assert job.state == "interrupted" and "shut down" in job.error and job.exit_code == -15


REPO = Path(__file__).resolve().parents[2]


def test_dry_run_of_a_recipe_job_verifies_the_stored_config(store):
    import yaml
    cfg = yaml.safe_load((REPO / "configs" / "llm" / "tiny_full.yaml").read_text())
    good, _ = submit(store, "train", submitter="t", config=cfg, args={"overrides": ["train.steps=3"]}, dry_run=True)
    assert good.config["train"]["steps"] == 3 and good.argv[0] == "train" and cfg["train"]["steps"] == 12
    bench_cfg = yaml.safe_load((REPO / "bench" / "configs" / "tiny_gpt.yaml").read_text())
    bench, _ = submit(store, "bench", submitter="t", config=bench_cfg, args={"steps": 2, "repeats": 1}, dry_run=True)
    assert bench.argv[0] == "bench" and bench.argv[2:6] == ["--steps", "2", "--repeats", "1"]
    bad, _ = submit(store, "train", submitter="t", config=cfg, dry_run=True)
    p = Path(bad.run_dir) / "config.yaml"
    p.write_text(p.read_text().replace("steps: 12", "steps: 13"))     # tampered after submission
    ex = LocalExecutor(store, max_concurrent=2, poll_s=0.05)
    ex.start()
    try:
        good, bench, bad = wait_terminal(store, [good.id, bench.id, bad.id])
    finally:
        ex.stop()
    for j in (good, bench):
        log = (Path(j.run_dir) / "job.log").read_text()
        assert j.state == "succeeded" and f"config sha256 {j.config_sha256} verified" in log, log
    assert bad.state == "failed" and "refusing" in (Path(bad.run_dir) / "job.log").read_text()
