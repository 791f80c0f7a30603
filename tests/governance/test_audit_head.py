"""Issue 25 #14: a deleted head file must be loud once the chain records that the log has one."""
import json

from typer.testing import CliRunner

from zeropoint.cli.main import app
from zeropoint.governance import audit


def _fill(n: int):
    for i in range(n):
        audit.append_event("tester", "act", f"r:{i}", {"i": i})
    return audit.log_path()


def test_deleting_the_head_and_the_last_lines_fails_verify():
    p = _fill(5)
    head = p.with_name(p.name + ".head")
    assert audit.verify_chain().ok
    head.unlink()
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:3]))   # the last two events are gone
    r = audit.verify_chain()
    assert not r.ok and "head" in r.reason and "seq 1" in r.reason, r
    res = CliRunner().invoke(app, ["audit", "verify"])
    assert res.exit_code == 1 and "head" in res.stdout
    # deleting the head alone is as loud: it is what hides a truncation
    audit.append_event("tester", "act", "r:later", {})
    r = audit.verify_chain()
    assert not r.ok and "missing" in r.reason, r


def test_first_event_records_that_the_log_has_a_head():
    p = _fill(1)
    ev = json.loads(p.read_text().splitlines()[0])
    assert ev["details"]["audit_head"] == "created"
    assert "audit_head" not in json.loads(_fill(1).read_text().splitlines()[1])["details"]


def test_a_log_with_no_head_recorded_still_verifies_with_a_note(tmp_path):
    p = tmp_path / "legacy.jsonl"
    prev = audit.GENESIS
    lines = []
    for seq in (1, 2):
        ev = {"seq": seq, "ts": "2026-01-01T00:00:00+00:00", "actor": "a", "action": "x", "resource": "r",
              "details": {}, "outcome": "ok", "prev_hash": prev}
        ev["hash"] = audit.event_hash(ev)
        prev = ev["hash"]
        lines.append(audit.canonical_json(ev) + b"\n")
    p.write_bytes(b"".join(lines))
    r = audit.verify_chain(p)
    assert r.ok and any("no head" in x for x in r.problems), r


def test_an_event_with_a_lone_surrogate_or_nan_is_recorded_not_lost():
    """Issue 25 #5: the append failed, so the request it recorded was missing from the chain."""
    ev = audit.append_event("user\udcff", "dataset_add", "dataset:\ud800x", {"n": float("nan"), "k\udfff": ["\ud800"]})
    assert ev["resource"] == "dataset:\\ud800x" and ev["details"]["n"] == "nan" and ev["actor"] == "user\\udcff"
    assert audit.read_events()[-1]["hash"] == ev["hash"] and audit.verify_chain().ok
