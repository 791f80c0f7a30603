"""Acceptance: a tiny training job submitted to a real uvicorn server runs to `succeeded`, and its run (loss curve,
checkpoints, job link) is visible through /v1/runs. The data goes through governance over the API first: the
recipe trains only on approved datasets. Real data (20 State of the Union speeches), real training on CPU.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")
pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from zp_server import Server, free_port, governed_sotu, make_token  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "llm" / "tiny_full.yaml"



def test_tiny_train_job_succeeds_and_its_run_is_visible(zp_home):
    s = Server(zp_home, free_port(), max_concurrent=1).start()
    try:
        t = {r: make_token(r, home=zp_home) for r in ("viewer", "submitter", "approver")}
        governed_sotu(s, t["submitter"], t["approver"])

        cfg = yaml.safe_load(TINY.read_text())
        st, job, _ = s.request("POST", "/v1/jobs", {"kind": "train", "config": cfg}, token=t["submitter"])
        assert st == 201, job
        assert job["argv"][0] == "train" and len(job["config_sha256"]) == 64

        tok_s_seen = []
        deadline = time.monotonic() + 400
        while True:
            st, job, _ = s.request("GET", f"/v1/jobs/{job['id']}", token=t["viewer"])
            if job["state"] not in ("queued", "running"):
                break
            m = s.request("GET", "/metrics", token=t["viewer"])[1]
            tok_s_seen += [float(v) for v in re.findall(
                rf'zeropoint_job_tokens_per_second{{job="{job["id"]}",[^}}]*}} (\S+)', m)]
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        log = s.request("GET", f"/v1/jobs/{job['id']}/logs", token=t["viewer"])[1]
        assert job["state"] == "succeeded" and job["exit_code"] == 0, log[-3000:]
        assert tok_s_seen and all(v > 0 for v in tok_s_seen), "/metrics must show the running job's tok/s"

        assert len(job["runs"]) == 1 and job["runs"][0]["status"] == "succeeded"
        run_id = job["runs"][0]["id"]
        st, runs, _ = s.request("GET", "/v1/runs", token=t["viewer"])
        listed = {r["id"]: r for r in runs["runs"]}
        assert listed[run_id]["status"] == "succeeded" and listed[run_id]["config_sha256"]
        st, run, _ = s.request("GET", f"/v1/runs/{run_id}", token=t["viewer"])
        assert run["run"]["job_id"] == job["id"] and not run["run"]["simulated"]
        curve = run["loss_curve"]
        assert [r["step"] for r in curve] == list(range(1, cfg["train"]["steps"] + 1)) or len(curve) == cfg["train"]["steps"]
        assert all(r["loss"] > 0 for r in curve) and curve[-1]["loss"] < curve[0]["loss"]
        assert run["checkpoints"], "the tiny config checkpoints every 4 steps"
        st, ck, _ = s.request("GET", "/v1/checkpoints", token=t["viewer"])
        assert any(c["run"] == run_id for c in ck["checkpoints"])
    finally:
        s.stop()
