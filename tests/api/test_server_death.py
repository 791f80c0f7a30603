"""A SIGKILLed `zpctl serve` takes its running jobs with it (they used to run on, unsupervised)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from zp_server import Server, free_port, make_token  # noqa: E402


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_jobs_die_with_a_killed_server(zp_home):
    s = Server(zp_home, free_port()).start()
    sub, viewer = make_token("submitter", home=zp_home), make_token("viewer", home=zp_home)
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True, "dry_run_hold_s": 30}, token=sub)
    assert st == 201
    deadline = time.monotonic() + 30
    while not (j := s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1])["pid"] or j["state"] != "running":
        assert time.monotonic() < deadline, j
        time.sleep(0.1)
    pid = j["pid"]
    log = Path(j["run_dir"]) / "job.log"
    while "holding" not in log.read_text():     # the job process is up and past its start-up
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert alive(pid)
    s.kill()
    t0 = time.monotonic()
    while alive(pid) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not alive(pid), f"job process {pid} outlived its server by 10 s"
    print(f"\njob process {pid} ended {time.monotonic() - t0:.2f}s after the server's SIGKILL")
    # the next start marks the job interrupted (tests/api/test_load.py, tests/orchestrator/test_executor.py)
