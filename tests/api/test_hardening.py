"""Issue 25 regressions against a real `zpctl serve` on 127.0.0.1: who the audit log names, what may be stored,
offsets, ownership, confinement of every file in a registered folder, the anonymous-denial flood - and, last, the
seeded API fuzz (api_fuzz.py) on the same server."""
from __future__ import annotations

import http.client
import json
import os
import random
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")
pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from api_fuzz import N as N_FUZZ, SEED as FUZZ_SEED, requests_for  # noqa: E402
from zp_server import Server, free_port, make_token, store_of  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = 0.5   # the server's anonymous-denial coalescing window in this module


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("zphome-hard")
    (home / "corpus").mkdir()                        # a registrable folder for the API fuzz's dataset requests
    (home / "corpus" / "a.txt").write_text("We hold these truths to be self-evident.\n")
    s = Server(home, free_port(), extra_env={"ZP_API_DENIAL_WINDOW_S": str(WINDOW_S)}).start()
    toks = {r: make_token(r, home=home) for r in ("viewer", "submitter", "approver", "admin")}
    yield s, toks
    s.stop()


def audit_events(home: Path) -> list[dict]:
    p = home / "datasets" / "audit.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def raw(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None = None):
    """One request with headers exactly as given (duplicates allowed) -> (status, parsed body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.putrequest(method, path, skip_accept_encoding=True)
    for k, v in headers:
        c.putheader(k, v)
    if body is not None:
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data.decode("utf-8", "replace")


def n_jobs(home: Path) -> int:
    return sum(store_of(home).counts().values())


def tiny_config() -> dict:
    return yaml.safe_load((REPO / "configs" / "llm" / "tiny_lora.yaml").read_text())


# ---- 1. duplicate Authorization headers ------------------------------------------------------------------------
def test_duplicate_authorization_is_400_and_never_audited_under_a_token(srv):
    s, t = srv
    body = json.dumps({"kind": "status", "dry_run": True}).encode()
    jobs, n0 = n_jobs(s.home), len(audit_events(s.home))
    for pair in ((t["submitter"], "zp_bad_token"), ("zp_bad_token", t["admin"]), (t["viewer"], t["submitter"])):
        st, resp = raw(s.port, "POST", "/v1/jobs", [("Authorization", f"Bearer {pair[0]}"),
                                                    ("Authorization", f"Bearer {pair[1]}")], body)
        assert st == 400 and "exactly one Authorization header" in resp["error"], (st, resp)
    new = audit_events(s.home)[n0:]
    assert new and all(e["outcome"] == "denied" and e["actor"] == "invalid-token" for e in new), new
    assert n_jobs(s.home) == jobs
    # one header: the actor recorded is the identity that was authorised
    st, job = raw(s.port, "POST", "/v1/jobs", [("Authorization", f"Bearer {t['submitter']}")], body)
    assert st == 201
    ev = [e for e in audit_events(s.home) if e["resource"] == f"job:{job['id']}"][0]
    assert ev["actor"] == job["submitter"] and ev["actor"].startswith("token:submitter#")


# ---- 2. non-finite numbers never reach the job store --------------------------------------------------------
@pytest.mark.parametrize("body,field", [
    (b'{"kind":"status","dry_run":true,"resources":{"num_cpus":NaN}}', "resources.num_cpus"),
    (b'{"kind":"status","dry_run":true,"resources":{"num_cpus":1e400}}', "resources.num_cpus"),
    (b'{"kind":"status","dry_run":true,"dry_run_hold_s":Infinity}', "dry_run_hold_s"),
    (b'{"kind":"status","dry_run":true,"args":{"what":"version","x":-Infinity}}', "args.x"),
])
def test_non_finite_numbers_are_refused_before_anything_is_stored(srv, body, field):
    s, t = srv
    jobs = n_jobs(s.home)
    for _ in range(2):   # a client that retries must not create anything either
        st, resp = raw(s.port, "POST", "/v1/jobs", [("Authorization", f"Bearer {t['submitter']}"),
                                                    ("Idempotency-Key", "nan-retry")], body)
        assert st in (400, 422) and field in resp["error"] and "finite" in resp["error"], (st, resp)
    assert n_jobs(s.home) == jobs
    assert s.request("GET", "/v1/jobs", token=t["viewer"])[0] == 200


def test_nan_override_of_a_train_config_is_refused_naming_the_key(srv):
    s, t = srv
    jobs = n_jobs(s.home)
    st, resp, _ = s.request("POST", "/v1/jobs", {"kind": "train", "config": tiny_config(), "dry_run": True,
                                                 "args": {"overrides": ["train.lr=.nan"]}}, token=t["submitter"])
    assert st == 422 and "train.lr" in resp["error"] and "finite" in resp["error"], resp
    assert n_jobs(s.home) == jobs
    st, listing, _ = s.request("GET", "/v1/jobs", token=t["viewer"])
    assert st == 200


def test_a_store_poisoned_before_validation_still_lists(srv):
    """A job row with NaN written by an older build (the store refuses new ones) must not take listing down."""
    import sqlite3
    s, t = srv
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True}, token=t["submitter"])
    with sqlite3.connect(s.home / "jobs" / "jobs.db") as db:
        db.execute("UPDATE jobs SET resources=? WHERE id=?", ('{"num_cpus": NaN, "memory": Infinity}', job["id"]))
    st, listing, _ = s.request("GET", "/v1/jobs?limit=1000", token=t["viewer"])
    assert st == 200, listing
    got = next(j for j in listing["jobs"] if j["id"] == job["id"])
    assert got["resources"] == {"num_cpus": "NaN", "memory": "Infinity"}
    assert s.request("GET", f"/v1/jobs/{job['id']}", token=t["viewer"])[0] == 200


def test_validation_errors_on_query_numbers_are_4xx_not_500(srv):
    s, t = srv
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True}, token=t["submitter"])
    for q in ("timeout_s=nan", "timeout_s=inf", "timeout_s=-1"):
        st, resp, _ = s.request("GET", f"/v1/jobs/{job['id']}/logs?follow=true&{q}", token=t["viewer"])
        assert st == 422 and "timeout_s" in resp["error"], (q, st, resp)


# ---- 5. lone surrogates ---------------------------------------------------------------------------------------
def test_lone_surrogate_is_400_and_the_denial_is_in_the_chain(srv):
    s, t = srv
    n = len(audit_events(s.home))
    st, resp = raw(s.port, "POST", "/v1/jobs", [("Authorization", f"Bearer {t['submitter']}")],
                   b'{"kind":"\\ud800status","dry_run":true}')
    assert st == 400 and "kind" in resp["error"] and "surrogate" in resp["error"], (st, resp)
    new = audit_events(s.home)[n:]
    assert len(new) == 1 and new[0]["outcome"] == "denied" and new[0]["details"]["status"] == 400
    st, rep, _ = s.request("GET", "/v1/audit/verify", token=t["approver"])
    assert st == 200 and rep["ok"], rep


# ---- 6. offsets -------------------------------------------------------------------------------------------------
def test_out_of_range_offsets_are_422(srv):
    s, t = srv
    st, resp, _ = s.request("GET", "/v1/jobs?offset=99999999999999999999", token=t["viewer"])
    assert st == 422 and "offset" in resp["error"], (st, resp)
    st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True}, token=t["submitter"])
    for off in (2 ** 63, 2 ** 64 + 5):
        st, resp, _ = s.request("GET", f"/v1/jobs/{job['id']}/logs?offset={off}", token=t["viewer"])
        assert st == 422 and "offset" in resp["error"], (off, st, resp)
    st, resp, _ = s.request("GET", "/v1/audit?offset=99999999999999999999", token=t["approver"])
    assert st == 422


def test_metrics_offset_in_the_middle_of_a_row_is_400(srv):
    s, t = srv
    d = s.home / "runs" / "run-offsets"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"id": "run-offsets", "status": "succeeded"}))
    rows = [{"event": "step", "step": i, "loss": 1.0 / (i + 1)} for i in range(3)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    st, ok, _ = s.request("GET", "/v1/runs/run-offsets/metrics?offset=0", token=t["viewer"])
    assert st == 200 and len(ok["rows"]) == 3
    st, nxt, _ = s.request("GET", f"/v1/runs/run-offsets/metrics?offset={len(json.dumps(rows[0])) + 1}",
                           token=t["viewer"])
    assert st == 200 and [r["step"] for r in nxt["rows"]] == [1, 2]
    st, resp, _ = s.request("GET", "/v1/runs/run-offsets/metrics?offset=5", token=t["viewer"])
    assert st == 400 and "offset 5" in resp["error"] and "next_offset" in resp["error"], (st, resp)
    st, resp, _ = s.request("GET", "/v1/runs/run-offsets/metrics?offset=5&follow=true", token=t["viewer"])
    assert st == 400


# ---- 7. nonsense values, resume ownership, data root --------------------------------------------------------------
@pytest.mark.parametrize("section,key,value", [
    ("train", "steps", -5), ("train", "lr", -1), ("train", "lr", 1e308), ("train", "grad_accum", 0),
    ("train", "micro_batch_size", 0), ("data", "val_fraction", 5), ("lora", "rank", 1e9),
    ("data", "datasets", ["../x"]), ("data", "seq_len", -32),
])
def test_nonsense_config_values_are_422_naming_the_field(srv, section, key, value):
    s, t = srv
    cfg = tiny_config()
    cfg[section][key] = value
    jobs = n_jobs(s.home)
    st, resp, _ = s.request("POST", "/v1/jobs", {"kind": "train", "config": cfg, "dry_run": True}, token=t["submitter"])
    assert st == 422 and f"{section}.{key}" in resp["error"], (st, resp)
    assert n_jobs(s.home) == jobs


def test_resume_needs_the_submitter_or_an_admin(srv):
    s, t = srv
    from zeropoint.orchestrator.store import Job, new_job_id
    store = store_of(s.home)
    owner_tok = next(k for k in store.list_tokens() if k.role == "submitter" and k.name == "submitter")
    run = "llm_finetune-owned-1"
    (s.home / "runs" / run).mkdir(parents=True)
    (s.home / "runs" / run / "run.json").write_text(json.dumps({"id": run, "status": "interrupted"}))
    job = Job(id=new_job_id(), kind="train", argv=["train", "x.yaml"], submitter=f"token:{owner_tok.name}#{owner_tok.id}",
              state="interrupted", run_ids=[run], run_dir=str(s.home / "jobs" / "x"))
    store.create(job)
    other = make_token("submitter", "other-resumer", home=s.home)
    jobs = n_jobs(s.home)
    st, resp, _ = s.request("POST", f"/v1/jobs/{job.id}/resume", token=other)
    assert st == 403 and "only they or an admin" in resp["error"], (st, resp)
    ev = audit_events(s.home)[-1]
    assert ev["outcome"] == "denied" and ev["resource"] == f"job:{job.id}"
    assert n_jobs(s.home) == jobs
    st, new, _ = s.request("POST", f"/v1/jobs/{job.id}/resume", token=t["admin"],
                           headers={"Idempotency-Key": "resume-by-admin"})
    assert st == 201 and new["kind"] == "resume"


def test_appliance_private_directories_cannot_be_registered(srv):
    s, t = srv
    (s.home / "keys").mkdir(exist_ok=True)
    (s.home / "keys" / "appliance.key").write_text("-----BEGIN PRIVATE KEY-----\nnot really\n")
    for path in ("keys", "keys/appliance.key", "jobs", "datasets", "."):
        st, resp, _ = s.request("POST", "/v1/datasets", {"path": path, "name": "secrets", "license": "MIT",
                                                         "source_type": "public"}, token=t["submitter"])
        assert st == 400 and "appliance" in resp["error"], (path, st, resp)
    assert s.request("GET", "/v1/datasets/secrets", token=t["viewer"])[0] == 404


# ---- 4. symlink escape ------------------------------------------------------------------------------------------
def test_a_symlink_escaping_the_data_root_is_refused_naming_the_file(srv):
    s, t = srv
    d = s.home / "evil"
    d.mkdir()
    (d / "ok.txt").write_text("plain text\n")
    (d / "passwd").symlink_to("/etc/passwd")
    (s.home / "shared.txt").write_text("inside the root\n")
    add = {"path": "evil", "name": "evil", "license": "MIT", "source_type": "public"}
    st, resp, _ = s.request("POST", "/v1/datasets", add, token=t["submitter"])
    assert st == 400 and "passwd" in resp["error"] and "/etc/passwd" in resp["error"], (st, resp)
    assert s.request("GET", "/v1/datasets/evil", token=t["viewer"])[0] == 404
    # a link that stays inside the data root is fine
    os.unlink(d / "passwd")
    (d / "inside").symlink_to(s.home / "shared.txt")
    st, ds, _ = s.request("POST", "/v1/datasets", add, token=t["submitter"])
    assert st == 201 and ds["files"] == 2, ds
    # a registered file later swapped for a link out of the root is not scanned
    os.unlink(s.home / "shared.txt")
    (s.home / "shared.txt").symlink_to("/etc/passwd")
    st, resp, _ = s.request("POST", "/v1/datasets/evil/scan", token=t["submitter"])
    assert st in (400, 409) and "/etc/passwd" in resp["error"], (st, resp)


# ---- 7. anonymous denials are coalesced, and still counted --------------------------------------------------------
def test_anonymous_denials_are_coalesced_without_losing_the_count(srv):
    s, t = srv
    time.sleep(WINDOW_S * 1.5)   # let earlier windows close
    p = s.home / "datasets" / "audit.jsonl"
    size0, n0 = p.stat().st_size, len(audit_events(s.home))
    n = 300
    t0 = time.monotonic()
    for i in range(n):
        token = None if i % 2 else "zp_000000000000_not-a-real-secret"
        assert s.request("GET" if i % 3 else "POST", "/v1/jobs", body={} if i % 3 == 0 else None, token=token)[0] == 401
    windows = (time.monotonic() - t0) / WINDOW_S + 2     # per actor: one event opening each window, one summary
    time.sleep(WINDOW_S * 2.5)
    s.request("GET", "/healthz")
    new = audit_events(s.home)[n0:]
    assert len(new) <= 2 * 2 * windows and len(new) < n / 4, (len(new), windows, [e["action"] for e in new])
    assert p.stat().st_size - size0 < len(new) * 1000
    counted = sum(e["details"].get("count", 1) for e in new if e["actor"] in ("anonymous", "invalid-token"))
    assert counted == n, new
    summaries = [e for e in new if e["action"] == "api.denied_coalesced"]
    assert summaries and all(e["details"]["client"] == "127.0.0.1" and e["details"]["first_at"] for e in summaries)
    st, rep, _ = s.request("GET", "/v1/audit/verify", token=t["approver"])
    assert rep["ok"]


# ---- API fuzz --------------------------------------------------------------------------------------------------
def test_api_survives_320_seeded_hostile_requests(srv):
    """The API fuzz (api_fuzz.py), last in this module: it leaves jobs and a dataset behind."""
    s, toks = srv
    rng = random.Random(FUZZ_SEED)
    statuses, problems = {}, []
    for method, path, body, token in requests_for(rng, toks):
        try:
            st, resp, _ = s.request(method, path, token=token, raw=body, timeout=60)
        except OSError as e:
            problems.append(f"{method} {path}: connection failed: {e}")
            continue
        statuses[st] = statuses.get(st, 0) + 1
        if st >= 500 or (st >= 400 and not (isinstance(resp, dict) and isinstance(resp.get("error"), str))):
            problems.append(f"{method} {path} {body[:200] if body else None!r}: {st} {str(resp)[:300]}")
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:15])
    print(f"\n{N_FUZZ} requests: statuses {dict(sorted(statuses.items()))}")
    assert s.request("GET", "/healthz")[0] == 200
    assert s.request("GET", "/v1/jobs?limit=1000", token=toks["viewer"])[0] == 200
    st, rep, _ = s.request("GET", "/v1/audit/verify", token=toks["approver"])
    assert st == 200 and rep["ok"], rep
    assert sum(v for k, v in statuses.items() if 400 <= k < 500) > N_FUZZ // 2   # most of it was refused, as it should be
