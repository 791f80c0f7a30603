"""Ray executor against a real local Ray head (`ray start --head` on 127.0.0.1), driven through the real API.

Slow: a Ray head takes ~10-50 s to start on a loaded 2-core box and ~2 GB of memory.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from zp_server import Server, free_port, governed_sotu, make_token  # noqa: E402  (the API test helpers)

from raytools import head_pids, start_head, stop_head  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "llm" / "tiny_full.yaml"

pytestmark = pytest.mark.slow
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")


@pytest.fixture(scope="module")
def ray_head():
    pytest.importorskip("ray", reason="ray[default] is not installed in this environment")
    # a short path: Ray's unix socket paths must stay under 107 bytes
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="zpray", dir="/tmp"))
    try:
        address = start_head(tmp)
        yield address
    finally:
        stop_head(tmp)
        assert not head_pids(tmp), "every process of the test's Ray head must be gone"
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def test_tiny_train_job_on_ray_succeeds_with_logs_through_the_api(ray_head, zp_home):
    import yaml
    s = Server(zp_home, free_port(), extra_env={"ZP_EXECUTOR": "ray", "ZP_RAY_ADDRESS": ray_head}).start()
    try:
        tok, viewer = make_token("submitter", home=zp_home), make_token("viewer", home=zp_home)
        governed_sotu(s, tok, make_token("approver", home=zp_home))
        cfg = yaml.safe_load(TINY.read_text())
        st, job, _ = s.request("POST", "/v1/jobs", {"kind": "train", "config": cfg, "resources": {"num_cpus": 1}},
                               token=tok)
        assert st == 201, job
        deadline = time.monotonic() + 420
        while True:
            st, job, _ = s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)
            if job["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(1)
        st, log, _ = s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)
        assert job["state"] == "succeeded", f"{job}\n{log[-3000:]}"
        assert job["executor"] == "ray" and job["external_id"] == job["id"] and job["exit_code"] == 0
        assert "Running entrypoint for job " + job["id"] in log, "the log must come from Ray's job manager"
        assert "zeropoint.cli.main train" in log
        # the run the Ray-launched process recorded is linked to the job and visible through /v1/runs
        assert job["runs"] and job["runs"][0]["status"] == "succeeded"
        st, runs, _ = s.request("GET", "/v1/runs", token=viewer)
        assert job["runs"][0]["id"] in {r["id"] for r in runs["runs"]}
        st, run, _ = s.request("GET", f"/v1/runs/{job['runs'][0]['id']}", token=viewer)
        assert run["run"]["job_id"] == job["id"] and len(run["loss_curve"]) == cfg["train"]["steps"]
    finally:
        s.stop()


def test_cancel_on_ray_maps_stop_back_to_cancelled(ray_head, zp_home):
    s = Server(zp_home, free_port(), extra_env={"ZP_EXECUTOR": "ray", "ZP_RAY_ADDRESS": ray_head}).start()
    try:
        tok, viewer = make_token("submitter", home=zp_home), make_token("viewer", home=zp_home)
        st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True, "dry_run_hold_s": 30}, token=tok)
        assert st == 201
        deadline = time.monotonic() + 120
        while "holding" not in s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)[1]:
            assert time.monotonic() < deadline, s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1]
            time.sleep(0.5)
        assert s.request("POST", f"/v1/jobs/{job['id']}/cancel", token=tok)[0] == 200
        while (j := s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1])["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert j["state"] == "cancelled" and "STOPPED" in j["error"]
        log = s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)[1]
        assert "would run: zpctl version --json" in log and "ended STOPPED" in log
    finally:
        s.stop()
