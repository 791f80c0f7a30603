"""Security against a real uvicorn server on 127.0.0.1: 401/403/400/413, each in the audit log as denied."""
from __future__ import annotations

import http.client
import json
import re

import pytest

# the API needs fastapi + uvicorn (pins in requirements.lock); say so rather than fail on an import
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")
pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from zp_server import Server, free_port, make_token, store_of


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module (start-up costs seconds on a busy 2-core box); tests name its home explicitly."""
    home = tmp_path_factory.mktemp("zphome-sec")
    s = Server(home, free_port(), extra_env={"ZP_API_DENIAL_WINDOW_S": "1"}).start()
    toks = {r: make_token(r, home=home) for r in ("viewer", "submitter", "approver", "admin")}
    yield s, toks
    s.stop()


def audit_events(home):
    p = home / "datasets" / "audit.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def last_event(home):
    return audit_events(home)[-1]


def test_no_token_is_401_everywhere_but_health(srv):
    s, toks = srv
    assert s.request("GET", "/healthz")[0] == 200
    assert s.request("GET", "/readyz")[0] == 200
    status, schema, _ = s.request("GET", "/openapi.json", token=toks["viewer"])
    assert status == 200 and schema["openapi"].startswith("3.")
    routes = [(m.upper(), re.sub(r"\{[^}]+\}", "x1", path)) for path, ops in schema["paths"].items() for m in ops]
    routes += [("GET", "/openapi.json"), ("GET", "/metrics")]
    assert len(routes) >= 15
    n_before = len(audit_events(s.home))
    for method, path in routes:
        if path in ("/healthz", "/readyz"):
            continue
        for token in (None, "zp_deadbeef0000_not-a-real-secret"):
            st, body, hdr = s.request(method, path, body={} if method == "POST" else None, token=token)
            assert st == 401, f"{method} {path} with token={token!r} gave {st}: {body}"
            assert hdr.get("www-authenticate") == "Bearer" and "bearer token" in body["error"]
    __import__("time").sleep(2.5)   # anonymous denials are coalesced per client over a 1 s window here
    s.request("GET", "/healthz")
    events = audit_events(s.home)[n_before:]
    single = [e for e in events if e["outcome"] == "denied" and e["details"].get("status") == 401]
    summed = [e for e in events if e["action"] == "api.denied_coalesced"]
    n_denied = len(single) + sum(e["details"]["count"] for e in summed)
    assert n_denied == 2 * (len(routes) - sum(p in ("/healthz", "/readyz") for _, p in routes))
    assert {e["actor"] for e in single} == {"anonymous", "invalid-token"}


def test_revoked_token_is_401(srv):
    s, _ = srv
    st = store_of(s.home)
    tok, secret = st.create_token("leaver", "admin", created_by="test")
    assert s.request("GET", "/v1/jobs", token=secret)[0] == 200
    st.revoke_token(tok.id)
    assert s.request("GET", "/v1/jobs", token=secret)[0] == 401


def test_viewer_cannot_submit_and_it_is_audited(srv):
    s, toks = srv
    body = {"kind": "status", "args": {"what": "version"}}
    st, resp, _ = s.request("POST", "/v1/jobs", body, token=toks["viewer"])
    assert st == 403 and "needs 'submitter'" in resp["error"]
    ev = last_event(s.home)
    assert ev["outcome"] == "denied" and ev["actor"].startswith("token:viewer#") and ev["details"]["status"] == 403
    assert ev["details"]["inputs_sha256"] == __import__("hashlib").sha256(json.dumps(body).encode()).hexdigest()
    assert s.request("GET", "/v1/jobs", token=toks["viewer"])[0] == 200
    # the audit log is for approvers and up
    assert s.request("GET", "/v1/audit", token=toks["submitter"])[0] == 403


def test_submitter_cannot_cancel_someone_elses_job(srv):
    s, toks = srv
    other = make_token("submitter", "other", home=s.home)
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True, "dry_run_hold_s": 5},
                           token=toks["submitter"])
    assert st == 201
    st, resp, _ = s.request("POST", f"/v1/jobs/{job['id']}/cancel", token=other)
    assert st == 403
    ev = last_event(s.home)
    assert ev["outcome"] == "denied" and ev["resource"] == f"job:{job['id']}"
    st, resp, _ = s.request("POST", f"/v1/jobs/{job['id']}/cancel", token=toks["admin"])
    assert st in (200, 409)


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", None),
    ("GET", "/v1/runs/..%252F..%252Fetc", None),
    ("GET", "/v1/runs/%2e%2e/x", None),
    ("GET", "/v1/jobs?state=../../x", None),
    ("POST", "/v1/jobs", {"kind": "train", "config_path": "../../etc/passwd"}),
    ("POST", "/v1/jobs", {"kind": "train", "config_path": "/etc/passwd"}),
    ("POST", "/v1/jobs", {"kind": "resume", "args": {"run": "../../../etc"}}),
    ("GET", "/v1/runs/a..b", None),
])
def test_path_traversal_is_400_and_audited(srv, method, path, body):
    s, toks = srv
    n = len(audit_events(s.home))
    st, resp, _ = s.request(method, path, body=body, token=toks["admin"])
    assert st == 400, (st, resp)
    assert "data root" in resp["error"] or "not allowed" in resp["error"]
    events = audit_events(s.home)[n:]
    assert len(events) == 1 and events[0]["outcome"] == "denied" and events[0]["details"]["status"] == 400


def test_oversized_body_is_413_and_audited(srv):
    s, toks = srv
    big = json.dumps({"kind": "train", "config": {"recipe": "x", "pad": "a" * (2 << 20)}}).encode()
    st, resp, _ = s.request("POST", "/v1/jobs", raw=big, token=toks["submitter"])
    assert st == 413 and "limit" in resp["error"]
    ev = last_event(s.home)
    assert ev["outcome"] == "denied" and ev["details"]["status"] == 413 and ev["actor"].startswith("token:submitter#")
    # a chunked body with no Content-Length is held to the same limit
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    c.putrequest("POST", "/v1/jobs")
    c.putheader("Authorization", f"Bearer {toks['submitter']}")
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Content-Type", "application/json")
    c.endheaders()
    try:
        for _ in range(40):
            chunk = b"a" * 65536
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.getresponse()
    assert r.status == 413
    c.close()
    assert last_event(s.home)["details"]["status"] == 413


def test_bad_config_is_422_with_the_problem_named(srv):
    s, toks = srv
    st, resp, _ = s.request("POST", "/v1/jobs", {"kind": "train", "config": {"recipe": "no_such_recipe"}},
                            token=toks["submitter"])
    assert st == 422 and "unknown recipe" in resp["error"]
    st, resp, _ = s.request("POST", "/v1/jobs", {"kind": "warp-drive"}, token=toks["submitter"])
    assert st == 400 and "available kinds" in resp["error"]
    ev = last_event(s.home)
    assert ev["outcome"] == "rejected" and ev["details"]["status"] == 400


def test_audit_chain_verifies_over_the_api(srv):
    s, toks = srv
    s.request("GET", "/v1/jobs")      # one more denied event
    st, rep, _ = s.request("GET", "/v1/audit/verify", token=toks["approver"])
    assert st == 200 and rep["ok"] and rep["events"] == len(audit_events(s.home)) > 10
    st, page, _ = s.request("GET", "/v1/audit?offset=0&limit=5", token=toks["approver"])
    assert st == 200 and len(page["events"]) == 5 and page["total"] == rep["events"]
