"""`zpctl token ...` and `zpctl jobs ...` on the local store (no server): JSON output, errors, audit."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from zeropoint.cli.main import app

runner = CliRunner()


def zp(*args):
    r = runner.invoke(app, list(args))
    return r.exit_code, r.output


def test_token_lifecycle_and_audit(zp_home):
    code, out = zp("token", "create", "--role", "approver", "--name", "alice", "--json")
    assert code == 0
    tok = json.loads(out)
    assert tok["role"] == "approver" and tok["token"].startswith(f"zp_{tok['id']}_")
    code, out = zp("token", "list", "--json")
    listed = json.loads(out)
    assert [t["id"] for t in listed] == [tok["id"]] and "token" not in listed[0] and tok["token"] not in out
    code, out = zp("token", "create", "--role", "root")
    assert code == 2 and "unknown role 'root'" in out
    code, out = zp("token", "create", "--role", "viewer", "--name", "../x")
    assert code == 2 and "not allowed" in out
    assert zp("token", "revoke", tok["id"])[0] == 0
    code, out = zp("token", "revoke", tok["id"])
    assert code == 2 and "no live token" in out
    log = [json.loads(x) for x in (zp_home / "datasets" / "audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in log] == [("token.create", "ok"), ("token.revoke", "ok"),
                                                          ("token.revoke", "rejected")]


def test_jobs_submit_ls_show_cancel(zp_home):
    code, out = zp("jobs", "submit", "status", "--arg", "what=version", "--dry-run", "--json")
    assert code == 0, out
    job = json.loads(out)
    assert job["state"] == "queued" and job["dry_run"] and job["argv"] == ["version", "--json"]
    code, out = zp("jobs", "ls", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == [job["id"]]
    code, out = zp("jobs", "show", job["id"], "--json")
    assert json.loads(out)["inputs_sha256"] == job["inputs_sha256"]
    code, out = zp("jobs", "cancel", job["id"], "--json")
    assert code == 0 and json.loads(out)["state"] == "cancelled"
    code, out = zp("jobs", "cancel", job["id"])
    assert code == 2 and "already cancelled" in out
    code, out = zp("jobs", "show", "../../etc")
    assert code == 2 and "not allowed" in out
    code, out = zp("jobs", "submit", "warp")
    assert code == 2 and "unknown job kind 'warp'" in out
    log = [json.loads(x) for x in (zp_home / "datasets" / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["job.submit", "job.cancel"]
    assert log[0]["details"]["inputs_sha256"] == job["inputs_sha256"]
