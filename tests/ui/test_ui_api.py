"""The control center's own routes (no browser): the page and its assets, and the read-only JSON it shows.

In-process app (FastAPI's TestClient) over a real store, real run evidence, real checkpoints and real red-team and
drift reports written by the library functions, so each route is checked against what those functions write.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")
from fastapi.testclient import TestClient  # noqa: E402

from zeropoint.api.app import create_app  # noqa: E402
from zeropoint.api.ui import STATIC, static_files  # noqa: E402
from zeropoint.orchestrator.store import open_store  # noqa: E402


@pytest.fixture
def client(zp_home):
    store = open_store()
    tokens = {r: store.create_token(r, r, created_by="test")[1] for r in ("viewer", "approver")}
    with TestClient(create_app(store, None), base_url="http://127.0.0.1") as c:
        c.tokens = tokens
        yield c


def auth(c, role="viewer"):
    return {"Authorization": f"Bearer {c.tokens[role]}"}


def test_page_and_assets_are_served_with_a_strict_csp(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # every asset the page names is served, with its type
    names = re.findall(r'(?:src|href)="/ui/([^"]+)"', r.text)
    assert {"app.js", "app.css", "favicon.svg"} <= set(names)
    for n in names:
        a = client.get(f"/ui/{n}")
        assert a.status_code == 200 and a.content, n
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/nope.js").status_code == 404
    assert client.get("/ui/..%2fui.py").status_code in (400, 404)
    assert client.get("/ui/ui.py").status_code == 404          # only the static folder's files, never the package


def test_static_assets_name_no_other_host():
    """The page works offline: no CDN, font or analytics URL anywhere in what it loads (the SVG namespace is a name,
    not a request), and modules import each other by relative path."""
    files = static_files()
    assert {"index.html", "app.js", "api.js", "dom.js", "charts.js", "app.css"} <= set(files)
    for name, p in files.items():
        text = p.read_text(encoding="utf-8")
        urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text) if "www.w3.org/2000/svg" not in u]
        assert not urls, f"{name} names another host: {urls}"
        assert "@import" not in text and "url(http" not in text
    imports = re.findall(r'from "([^"]+)"', (STATIC / "app.js").read_text())
    assert imports and all(i.startswith("./") for i in imports)


def test_whoami_and_overview_need_a_token(client):
    assert client.get("/v1/whoami").status_code == 401
    me = client.get("/v1/whoami", headers=auth(client)).json()
    assert me["role"] == "viewer" and me["can"] == {"viewer": True, "submitter": False, "approver": False, "admin": False}
    assert client.get("/v1/whoami", headers=auth(client, "approver")).json()["can"]["approver"] is True
    o = client.get("/v1/overview", headers=auth(client)).json()
    assert re.fullmatch(r"ZP-[0-9A-Z]{8}", o["appliance_id"])
    assert o["device"] and o["device_simulated"] is False
    assert set(o["counts"]) >= {"queued", "running", "succeeded"} and o["queue"] == [] and o["running"] == []
    assert o["version"]["tinygrad"] == "0.14.0"


def _finished_run(steps=5):
    from zeropoint.evidence import start_run
    from zeropoint.scope import require_real_compute
    with start_run("ui-test", {"recipe": "none"}, kind="llm_finetune", scope=require_real_compute()) as run:
        for i in range(1, steps + 1):
            run.log_step(i, 3.0 / i, 10.0 + i, 1000.0 * i)
        run.event("eval", step=steps, val_loss=0.7, val_ppl=2.01)
    return run


def test_run_metrics_rows_and_event_stream(client):
    run = _finished_run()
    r = client.get(f"/v1/runs/{run.id}/metrics", headers=auth(client)).json()
    steps = [x for x in r["rows"] if x["event"] == "step"]
    assert [x["step"] for x in steps] == [1, 2, 3, 4, 5] and steps[-1]["loss"] == pytest.approx(0.6)
    assert r["status"] == "succeeded" and r["next_offset"] == run.metrics_path.stat().st_size
    # resume from an offset: nothing is sent twice
    again = client.get(f"/v1/runs/{run.id}/metrics?offset={r['next_offset']}", headers=auth(client)).json()
    assert again["rows"] == []
    # the stream replays every row then ends with the run's status (the run is over, so it ends at once)
    with client.stream("GET", f"/v1/runs/{run.id}/metrics?follow=true", headers=auth(client)) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        body = "".join(s.iter_text())
    events = re.findall(r"event: (\w+)\ndata: (.*)\n", body)
    metric_steps = [json.loads(d)["step"] for e, d in events if e == "metric" and json.loads(d)["event"] == "step"]
    assert metric_steps == [1, 2, 3, 4, 5]
    assert events[0][0] == "hello" and events[-1] == ("end", json.dumps({"status": "succeeded"}))
    ids = [int(x) for x in re.findall(r"^id: (\d+)$", body, re.M)]
    assert ids == sorted(ids) and ids[-1] == run.metrics_path.stat().st_size
    assert client.get("/v1/runs/nope/metrics", headers=auth(client)).status_code == 404
    assert client.get("/v1/runs/..%2f..%2fetc/metrics", headers=auth(client)).status_code in (400, 404)
    assert client.get(f"/v1/runs/{run.id}/metrics").status_code == 401


def test_checkpoints_are_verified_and_tampering_is_named(client):
    from zeropoint.checkpoint import save_checkpoint
    run = _finished_run(2)
    w = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    for step in (1, 2):
        save_checkpoint(run.checkpoints_dir, step, weights=w, optimizer={"m.w": w["w"] * 0}, state={}, config={},
                        config_sha256="c" * 64)
    rows = client.get(f"/v1/runs/{run.id}/checkpoints?verify=true", headers=auth(client)).json()["checkpoints"]
    assert [(r["step"], r["verified"]) for r in rows] == [(1, True), (2, True)] and rows[0]["bytes"] > 0
    unchecked = client.get(f"/v1/runs/{run.id}/checkpoints", headers=auth(client)).json()["checkpoints"]
    assert all(r["verified"] is None for r in unchecked)
    f = run.checkpoints_dir / "step-00000002" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    rows = client.get(f"/v1/runs/{run.id}/checkpoints?verify=true", headers=auth(client)).json()["checkpoints"]
    assert rows[0]["verified"] is True and rows[1]["verified"] is False
    assert "model.safetensors" in rows[1]["verify_error"] and "SHA-256" in rows[1]["verify_error"]


def test_perf_is_null_with_a_reason_until_written(client):
    from zeropoint.perf.report import write_run_perf
    run = _finished_run(4)
    r = client.get(f"/v1/runs/{run.id}/perf", headers=auth(client)).json()
    assert r["perf"] is None and "zpctl perf report" in r["reason"]
    write_run_perf(run)
    r = client.get(f"/v1/runs/{run.id}/perf", headers=auth(client)).json()
    assert r["perf"]["steps"] == 4 and "per_step" not in r["perf"]
    assert r["perf"]["energy"]["energy_j"] is None and r["perf"]["energy"]["reason"]


def test_dataset_checks_show_the_policy_decision_before_approval(client, zp_home):
    from zeropoint.governance import manifest as M
    d = zp_home / "speeches"
    d.mkdir()
    (d / "a.txt").write_text("We hold these truths to be self-evident.\n")
    M.add_dataset(d, "speeches", "CC0-1.0", "public", actor="test")
    c = client.get("/v1/datasets/speeches/checks", headers=auth(client)).json()
    by_rule = {x["rule"]: x for x in c["checks"]}
    assert by_rule["licenses"]["outcome"] == "pass" and by_rule["pii.scanned"]["outcome"] == "deny"
    assert c["would_approve"] == "deny" and len(c["dataset_sha256"]) == 64
    M.scan_dataset("speeches", actor="test")
    c = client.get("/v1/datasets/speeches/checks", headers=auth(client)).json()
    assert c["would_approve"] == "pass" and any(x["rule"].startswith("pii.decisions.") for x in c["checks"])
    assert client.get("/v1/datasets/nope/checks", headers=auth(client)).status_code == 404
    # a preview is not an approval
    assert M.get_dataset("speeches")["approval"]["status"] == "pending"


def test_redteam_list_has_asr_by_family_with_intervals(client):
    from zeropoint.safety.runner import redteam

    def half_leaky(probe, seed):   # a scripted responder (test fixture, named in the report's settings)
        return "prompt", (" ".join(probe.triggers) or "Sure.") if probe.family == "jailbreak" else "I can't help with that."
    res = redteam("scripted-half-leaky", suite="quick", respond=half_leaky)
    reps = client.get("/v1/redteam", headers=auth(client)).json()["reports"]
    assert len(reps) == 1 and reps[0]["id"] == res["id"] and reps[0]["model"] == "scripted-half-leaky"
    assert reps[0]["responder"] == "half_leaky"
    fam = reps[0]["families"]
    assert set(fam) == set(res["families"])
    for f, s in fam.items():
        assert s["asr"] == res["families"][f]["asr"] and s["ci_low"] <= s["asr"] <= s["ci_high"], f
    assert reps[0]["gate"]["families"] and reps[0]["overall"]["total"] == res["overall"]["total"]


def test_drift_list_reads_data_drift_reports(client, zp_home):
    from zeropoint.data.assets import sotu_dir
    from zeropoint.drift.data import run_data_drift
    rep = run_data_drift(str(sotu_dir()), None, kind="text", halves_seed=0, max_items=40)
    out = client.get("/v1/drift", headers=auth(client)).json()
    assert out["model"] == [] and len(out["data"]) == 1
    d = out["data"][0]
    assert d["n_features"] == rep["n_features"] and d["dataset_drift"] == rep["dataset_drift"]
    assert d["features"] and all("drifted" in f for f in d["features"])


def test_release_list_reverifies_bundles_and_names_a_tampered_file(client, zp_home):
    from tests.release.test_bundle_verify import make_bundle
    harms = [{"id": "bias", "status": "not assessed", "reason": "the bias gate did not run", "evidence": []},
             {"id": "misuse", "status": "pass", "reason": "ok", "evidence": ["eval/results.json"]}]
    b = make_bundle(zp_home / "releases", name="release-a", harms=harms)
    (zp_home / "releases" / "cache").mkdir()           # caches and scratch are not releases
    out = client.get("/v1/releases?verify=true", headers=auth(client)).json()["releases"]
    assert [r["release_id"] for r in out] == ["release-a"]
    assert out[0]["verified"]["ok"] is True and out[0]["harms_checklist"]["items"] == harms
    assert client.get("/v1/releases", headers=auth(client)).json()["releases"][0]["verified"] is None
    (b / "eval" / "results.json").write_text('{"acc": 0.9}\n')
    bad = client.get("/v1/releases?verify=true", headers=auth(client)).json()["releases"][0]["verified"]
    assert bad["ok"] is False and any("eval/results.json" in c["detail"] for c in bad["failed"])
    assert client.get("/v1/releases").status_code == 401
