"""Dataset governance through a real uvicorn server: roles, confinement, and the audit trail with dataset hashes."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")
pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from zp_server import Server, free_port, make_token  # noqa: E402


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module: start-up costs seconds on a busy 2-core box."""
    home = tmp_path_factory.mktemp("zphome-data")
    s = Server(home, free_port()).start()
    yield s
    s.stop()


def events(home):
    return [json.loads(x) for x in (home / "datasets" / "audit.jsonl").read_text().splitlines()]


def test_dataset_lifecycle_with_roles_and_audit(srv):
    s = srv
    zp_home = s.home
    corpus = zp_home / "corpus"
    corpus.mkdir()
    (corpus / "speech.txt").write_text("We hold these truths to be self-evident.\nThe union is strong.\n")
    t = {r: make_token(r, home=zp_home) for r in ("viewer", "submitter", "approver")}
    add = {"path": "corpus", "name": "speeches", "license": "CC0-1.0", "source_type": "public"}
    assert s.request("POST", "/v1/datasets", add, token=t["viewer"])[0] == 403
    for bad in ("../../etc", "/etc", "corpus/../../etc"):
        st, resp, _ = s.request("POST", "/v1/datasets", dict(add, path=bad), token=t["submitter"])
        assert st == 400, (bad, st, resp)
        assert events(zp_home)[-1]["outcome"] == "denied"
    st, ds, _ = s.request("POST", "/v1/datasets", add, token=t["submitter"])
    assert st == 201 and ds["files"] == 1 and ds["approval"] == "pending" and len(ds["sha256"]) == 64

    st, scan, _ = s.request("POST", "/v1/datasets/speeches/scan", token=t["submitter"])
    assert st == 200 and scan["pii"]["risk"] == "none" and scan["dataset_sha256"] == ds["sha256"]

    st, resp, _ = s.request("POST", "/v1/datasets/speeches/approve", token=t["submitter"])
    assert st == 403 and "needs 'approver'" in resp["error"]
    denied = events(zp_home)[-1]
    assert denied["outcome"] == "denied" and denied["actor"].startswith("token:submitter#")
    assert s.request("GET", "/v1/datasets", token=t["viewer"])[1]["datasets"][0]["approval"] == "pending"

    st, resp, _ = s.request("POST", "/v1/datasets/speeches/approve", {"note": "reviewed"}, token=t["approver"])
    assert st == 200 and resp["approval"]["status"] == "approved"
    assert resp["approval"]["approver"].startswith("token:approver#")
    st, one, _ = s.request("GET", "/v1/datasets/speeches", token=t["viewer"])
    assert one["approval"]["status"] == "approved" and one["files"][0]["sha256"]

    st, resp, _ = s.request("POST", "/v1/datasets/speeches/reject", {"reason": "license unclear"}, token=t["approver"])
    assert st == 200 and resp["approval"]["status"] == "rejected"
    assert s.request("POST", "/v1/datasets/nope/scan", token=t["submitter"])[0] == 404
    assert s.request("POST", "/v1/datasets/..%2Fx/scan", token=t["submitter"])[0] == 400

    ev = events(zp_home)
    api = [e for e in ev if e["action"].startswith("dataset.") and e["outcome"] == "ok"]
    assert [e["action"] for e in api] == ["dataset.add", "dataset.scan", "dataset.approve", "dataset.reject"]
    assert all(e["details"]["dataset_sha256"] == ds["sha256"] for e in api)
    gov = [e["action"] for e in ev if e["action"].startswith("dataset_")]
    assert {"dataset_scan", "dataset_approve", "dataset_reject"} <= set(gov)
    assert s.request("GET", "/v1/audit/verify", token=t["approver"])[1]["ok"]


def test_data_scan_job_runs_zpctl_data_scan_as_the_submitter(srv):
    s = srv
    zp_home = s.home
    corpus = zp_home / "mail"
    corpus.mkdir()
    (corpus / "m1.txt").write_text("From: alice@example.com\nCall 212-555-0187 about the invoice.\n")
    sub, viewer = make_token("submitter", "carol", home=zp_home), make_token("viewer", home=zp_home)
    add = {"path": "mail", "name": "mail", "license": "CC0-1.0", "source_type": "public"}
    assert s.request("POST", "/v1/datasets", add, token=sub)[0] == 201
    st, resp, _ = s.request("POST", "/v1/jobs", {"kind": "data-scan", "args": {"name": "ghost"}}, token=sub)
    assert st == 400 and "no dataset 'ghost'" in resp["error"]
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "data-scan", "args": {"name": "mail"}}, token=sub)
    assert st == 201 and job["argv"] == ["data", "scan", "mail", "--json"]
    import time
    deadline = time.monotonic() + 60
    while (job := s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1])["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["state"] == "succeeded", s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)[1]
    ds = s.request("GET", "/v1/datasets/mail", token=viewer)[1]
    assert ds["pii"]["counts"]["EMAIL"] >= 1
    scan_ev = [e for e in events(zp_home) if e["action"] == "dataset_scan"][-1]
    assert scan_ev["actor"].startswith("token:carol#"), "the job's audit events name its submitter"
