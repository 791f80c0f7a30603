"""A SIGKILLed `zpctl serve` takes its running jobs with it; the next start marks them interrupted."""
from __future__ import annotations

import os
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


def test_jobs_die_with_a_killed_server_and_are_marked_on_restart(zp_home):
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
    s2 = Server(zp_home, s.port).start()
    try:
        j = s2.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1]
        assert j["state"] == "interrupted" and "server stopped" in j["error"], j
    finally:
        s2.stop()
    assert os.environ.get("ZP_SUPERVISOR_PID") is None
