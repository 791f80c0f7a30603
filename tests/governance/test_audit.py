import json
import multiprocessing as mp

import pytest
from typer.testing import CliRunner

from zeropoint.governance import audit
from zeropoint.workspace import workspace


def _fill(n=5):
    for i in range(n):
        audit.append_event("tester", "dataset_add", f"dataset:d{i}", {"i": i})
    return workspace().audit_log


def _lines(p):
    return p.read_text(encoding="utf-8").splitlines(keepends=True)


def test_chain_links_and_hashes():
    p = _fill(3)
    evs = [json.loads(x) for x in _lines(p)]
    assert [e["seq"] for e in evs] == [1, 2, 3]
    assert evs[0]["prev_hash"] == "0" * 64
    assert evs[1]["prev_hash"] == evs[0]["hash"] and evs[2]["prev_hash"] == evs[1]["hash"]
    assert all(audit.event_hash(e) == e["hash"] for e in evs)
    assert audit.verify_chain().ok


@pytest.mark.parametrize("tamper,line", [
    ("edit", 3), ("delete", 3), ("reorder", 2), ("insert", 4), ("delete_last", 6), ("truncate", 5)])
def test_any_tampering_names_the_line(tamper, line):
    p = _fill(5)
    ls = _lines(p)
    if tamper == "edit":
        ls[2] = ls[2].replace('"i":2', '"i":7')
    elif tamper == "delete":
        del ls[2]
    elif tamper == "reorder":
        ls[1], ls[2] = ls[2], ls[1]
    elif tamper == "insert":
        forged = json.loads(ls[1])
        forged.update(seq=3, prev_hash=json.loads(ls[1])["hash"], resource="dataset:forged")
        forged["hash"] = audit.event_hash(forged)
        ls.insert(2, json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n")
    elif tamper == "delete_last":
        ls = ls[:-1]
        line = 5
    elif tamper == "truncate":
        ls[-1] = ls[-1][:20]
    p.write_text("".join(ls), encoding="utf-8")
    r = audit.verify_chain()
    assert not r.ok
    assert r.first_bad_line == line, r.reason
    assert f"line {line}" in r.reason


def test_edit_with_recomputed_hash_still_breaks_chain():
    # a forger who recomputes the edited line's hash breaks the next line's prev_hash instead
    p = _fill(4)
    ls = _lines(p)
    ev = json.loads(ls[1])
    ev["actor"] = "mallory"
    ev["hash"] = audit.event_hash(ev)
    ls[1] = json.dumps(ev, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    p.write_text("".join(ls), encoding="utf-8")
    r = audit.verify_chain()
    assert not r.ok and r.first_bad_line == 3


def _worker(k):
    for i in range(20):
        audit.append_event(f"proc{k}", "training_use", f"dataset:p{k}", {"i": i})


def test_concurrent_appends_from_processes_keep_the_chain():
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(k,)) for k in range(4)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    r = audit.verify_chain()
    assert r.ok, r.reason
    assert r.events == 80


def test_cli_verify_exit_codes():
    from zeropoint.cli.main import app
    p = _fill(3)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    ls = _lines(p)
    ls[1] = ls[1].replace("tester", "someone")
    p.write_text("".join(ls), encoding="utf-8")
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "line 2" in bad.stdout
    tail = runner.invoke(app, ["audit", "tail", "-n", "2", "--json"])
    assert [e["seq"] for e in json.loads(tail.stdout)] == [2, 3]


def test_append_refuses_when_last_line_is_garbage():
    p = _fill(1)
    with open(p, "a") as f:
        f.write("not json\n")
    with pytest.raises(audit.AuditError, match="audit verify"):
        audit.append_event("x", "a", "r")


def test_head_lagging_after_a_crash_is_not_tampering():
    p = _fill(3)
    head = p.with_name(p.name + ".head")
    ev2 = json.loads(_lines(p)[1])
    head.write_text(json.dumps({"seq": 2, "hash": ev2["hash"]}))
    r = audit.verify_chain()
    assert r.ok and r.problems and "lags" in r.problems[0]
    head.write_text(json.dumps({"seq": 2, "hash": "f" * 64}))
    assert not audit.verify_chain().ok
