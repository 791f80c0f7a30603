"""Jobs through a real uvicorn server: submit, SSE log following, idempotency, cancel, metrics, audit details."""
from __future__ import annotations

import hashlib
import http.client
import json
import time

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")
pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from zp_server import Server, free_port, make_token  # noqa: E402


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("zphome-jobs")
    s = Server(home, free_port(), max_concurrent=2).start()
    yield s, {r: make_token(r, home=home) for r in ("viewer", "submitter", "approver", "admin")}
    s.stop()


def events(home):
    return [json.loads(x) for x in (home / "datasets" / "audit.jsonl").read_text().splitlines()]


def sse(port: int, path: str, token: str, timeout: float = 60) -> list[tuple[str, str]]:
    """Read a server-sent-event stream to its end: [(event, data), ...]."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    out, ev, data = [], "message", []
    for raw in r:
        line = raw.decode().rstrip("\n")
        if not line:
            out.append((ev, "\n".join(data)))
            if ev in ("end", "timeout"):
                break
            ev, data = "message", []
        elif line.startswith("event: "):
            ev = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
    c.close()
    return out


def test_submit_real_job_and_follow_its_log_over_sse(srv):
    s, t = srv
    body = {"kind": "status", "args": {"what": "version"}}
    st, job, _ = s.request("POST", "/v1/jobs", body, token=t["submitter"])
    assert st == 201 and job["state"] in ("queued", "running") and job["submitter"].startswith("token:submitter#")
    stream = sse(s.port, f"/v1/jobs/{job['id']}/logs?follow=true", t["viewer"])
    assert stream[-1][0] == "end" and json.loads(stream[-1][1]) == {"state": "succeeded", "exit_code": 0}
    text = "\n".join(d for e, d in stream if e == "message")
    assert '"tinygrad": "0.14.0"' in text and "exited with code 0" in text
    st, plain, hdr = s.request("GET", f"/v1/jobs/{job['id']}/logs?offset=0", token=t["viewer"])
    assert '"tinygrad": "0.14.0"' in plain and int(hdr["x-log-offset"]) == len(plain.encode())
    ev = [e for e in events(s.home) if e["resource"] == f"job:{job['id']}"][0]
    assert ev["action"] == "job.submit" and ev["outcome"] == "ok" and ev["details"]["status"] == 201
    assert ev["details"]["inputs_sha256"] == hashlib.sha256(json.dumps(body).encode()).hexdigest()
    assert ev["details"]["job_inputs_sha256"] == job["inputs_sha256"]


def test_idempotency_key_gives_the_same_job(srv):
    s, t = srv
    body = {"kind": "status", "dry_run": True}
    st1, a, _ = s.request("POST", "/v1/jobs", body, token=t["submitter"], headers={"Idempotency-Key": "once-1"})
    st2, b, _ = s.request("POST", "/v1/jobs", body, token=t["submitter"], headers={"Idempotency-Key": "once-1"})
    assert (st1, st2) == (201, 200) and a["id"] == b["id"]
    st, jobs, _ = s.request("GET", "/v1/jobs?limit=1000", token=t["viewer"])
    assert sum(j["idempotency_key"] == "once-1" for j in jobs["jobs"]) == 1


def test_cancel_a_running_job_over_the_api(srv):
    s, t = srv
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True, "dry_run_hold_s": 30},
                           token=t["submitter"])
    deadline = time.monotonic() + 30
    while s.request("GET", f"/v1/jobs/{job['id']}", token=t["viewer"])[1]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    t0 = time.monotonic()
    st, resp, _ = s.request("POST", f"/v1/jobs/{job['id']}/cancel", token=t["submitter"])
    assert st == 200 and resp["cancel_requested"]
    while (j := s.request("GET", f"/v1/jobs/{job['id']}", token=t["viewer"])[1])["state"] == "running":
        assert time.monotonic() - t0 < 20
        time.sleep(0.1)
    assert j["state"] == "cancelled" and j["exit_code"] == -15
    assert s.request("POST", f"/v1/jobs/{job['id']}/cancel", token=t["submitter"])[0] == 409
    ev = [e for e in events(s.home) if e["action"] == "job.cancel" and e["resource"] == f"job:{job['id']}"]
    assert ev[0]["outcome"] == "ok" and ev[1]["outcome"] == "rejected"


def test_status_metrics_and_listing(srv):
    s, t = srv
    assert s.request("GET", "/readyz")[1]["ready"]
    st, v, _ = s.request("GET", "/v1/status/version", token=t["viewer"])
    assert st == 200 and v["tinygrad"] == "0.14.0"
    st, counts, _ = s.request("GET", "/v1/jobs?limit=1", token=t["viewer"])
    st, text, hdr = s.request("GET", "/metrics", token=t["viewer"])
    assert st == 200 and hdr["content-type"].startswith("text/plain")
    for state, n in counts["counts"].items():
        assert f'zeropoint_jobs{{state="{state}"}} {n}' in text
    assert "zeropoint_queue_length " in text and "# TYPE zeropoint_job_tokens_per_second gauge" in text
    assert s.request("GET", "/v1/jobs?state=bogus", token=t["viewer"])[0] == 422
    assert s.request("GET", "/v1/jobs/job-does-not-exist", token=t["viewer"])[0] == 404
    assert s.request("GET", "/v1/runs", token=t["viewer"])[0] == 200
    assert s.request("GET", "/v1/checkpoints", token=t["viewer"])[0] == 200
    assert s.request("GET", "/v1/evals", token=t["viewer"])[0] == 200


def test_evals_listing_reads_results_files(srv):
    s, t = srv
    d = s.home / "evals" / "eval-1"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"run_id": "eval-run-1", "model": "tiny", "wall_s": 1.5, "tasks": {
        "mmlu_dev": {"metrics": {"acc": {"value": 0.31}}, "n_docs": 282, "samples_file": "samples_mmlu_dev.jsonl"}}}))
    (s.home / "evals" / "broken").mkdir()
    (s.home / "evals" / "broken" / "results.json").write_text("{not json")
    st, ev, _ = s.request("GET", "/v1/evals", token=t["viewer"])
    assert st == 200
    by = {e["id"]: e for e in ev["evals"]}
    assert by["eval-1"]["tasks"]["mmlu_dev"] == {"metrics": {"acc": {"value": 0.31}}, "n_docs": 282}
    assert "unreadable" in by["broken"]["error"]


def test_status_endpoints_serve_the_zpctl_outputs(srv):
    s, t = srv
    st, h, _ = s.request("GET", "/v1/status/health", token=t["viewer"], timeout=120)
    assert st == 200 and h["status"] in ("green", "yellow", "red") and {c["name"] for c in h["checks"]} >= {"no_mock_flags"}
    st, d, _ = s.request("GET", "/v1/status/diag", token=t["viewer"], timeout=120)
    assert st == 200 and d["parity"]["status"] == "SKIPPED" and d["hardware"]["fingerprint"]
    assert d["version"]["tinygrad"] == "0.14.0"
