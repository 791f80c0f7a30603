import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO, zpctl, zpctl_json
from zeropoint.evidence import effective_status, list_runs, load_run, start_run
from zeropoint.scope import require_real_compute


def test_successful_run_records_everything(zp_home):
    scope = require_real_compute()
    with start_run("zpctl test", {"a": 1}, kind="unit", seed=7, datasets=[{"name": "d", "sha256": "ab"}], scope=scope) as run:
        run.log_step(1, 2.5, 10.0, 100.0)
        run.log_step(2, 2.0, 11.0, 90.0)
    rec = json.loads((run.dir / "run.json").read_text())
    assert rec["status"] == "succeeded" and rec["ended_at"] and rec["seed"] == 7
    assert rec["device"] == "CPU" and rec["simulated"] is False and rec["tinygrad_version"] == "0.14.0"
    assert len(rec["config_sha256"]) == 64 and len(rec["hardware_fingerprint"]) == 64
    assert rec["datasets"][0]["name"] == "d"
    rows = list(csv.reader((run.dir / "loss_curve.csv").open()))
    assert rows[0] == ["step", "step_ms", "tokens_per_s", "loss"] and [r[0] for r in rows[1:]] == ["1", "2"]
    events = [json.loads(l)["event"] for l in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert events == ["started", "step", "step", "finished"]
    assert run.dir.parent == zp_home / "runs"


def test_failed_run_is_marked_failed(zp_home):
    with pytest.raises(ValueError):
        with start_run("zpctl test", None, kind="unit") as run:
            raise ValueError("boom")
    rec = load_run(run.id).record
    assert rec["status"] == "failed" and "boom" in rec["error"]


def test_sigterm_marks_interrupted(zp_home):
    code = textwrap.dedent("""
        import os, signal, time
        from zeropoint.evidence import start_run
        with start_run("t", None, kind="unit", run_id="victim") as run:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert load_run("victim").record["status"] == "interrupted"


def test_sigkill_reads_as_interrupted(zp_home):
    code = textwrap.dedent("""
        import os, signal
        from zeropoint.evidence import start_run
        with start_run("t", None, kind="unit", run_id="killed") as run:
            run.log_step(1, 1.0, 1.0, 1.0)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    rec = load_run("killed").record
    assert rec["status"] == "running"            # what the dead process left on disk...
    assert effective_status(rec) == "interrupted"  # ...is not believed
    assert [r["status"] for r in list_runs()] == ["interrupted"]
    r, doc = zpctl_json("runs", "ls", "--json")
    assert doc[0]["id"] == "killed" and doc[0]["status"] == "interrupted"


def test_resume_truncates_curve(zp_home):
    with start_run("t", None, kind="unit", run_id="r1") as run:
        for s in range(1, 6):
            run.log_step(s, 1.0 / s, 1.0, 1.0)
    with start_run("t resume", None, run_id="r1", resume=True) as run:
        run.truncate_after(3)
        run.log_step(4, 0.2, 1.0, 1.0)
    rows = list(csv.reader((run.dir / "loss_curve.csv").open()))
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert load_run("r1").record["resumes"]


def test_simulated_run_is_stamped(zp_home, monkeypatch):
    monkeypatch.setenv("ZP_MOCK", "1")
    scope = require_real_compute(allow_simulated=True)
    with start_run("t", None, kind="unit", scope=scope) as run:
        pass
    rec = load_run(run.id).record
    assert rec["simulated"] is True and rec["banner"] == "SIMULATED RUN - NOT REAL COMPUTE"
    r = zpctl("runs", "show", run.id)
    assert "SIMULATED RUN" in r.stdout


def test_runs_show_unknown_is_clear_error():
    r = zpctl("runs", "show", "nope")
    assert r.returncode == 2 and "no run 'nope'" in r.stderr and "zpctl runs ls" in r.stderr


def test_version_json():
    r, doc = zpctl_json("version", "--json")
    assert r.returncode == 0
    assert doc["zeropoint"] and doc["tinygrad"] == "0.14.0" and doc["python"].startswith("3.")
    assert doc["commit"] is None or len(doc["commit"]) == 40


def test_runs_show_prints_the_perf_summary(zp_home):
    from zeropoint.perf.report import write_perf
    with start_run("zpctl test", {"a": 1}, kind="unit", scope=require_real_compute()) as run:
        run.log_step(1, 2.5, 10.0, 100.0)
    summary = {"steps": 1, "tokens_per_s": 123.45, "steady_step_s": {"median": 0.5, "min": 0.4, "max": 0.6, "n": 3},
               "first_step_s": 9.0, "compile_s": 9.0, "mfu": None, "memory": {"rss_peak_bytes": 2_000_000_000},
               "energy": {"energy_j": None, "reason": "no RAPL here"}}
    write_perf(run.dir, summary, [{"step": 1, "seconds": 0.5, "tokens_per_s": 123.45, "loss": 2.5}],
               cost={"currency": "USD", "total": 0.01})
    r = zpctl("runs", "show", run.id)
    assert r.returncode == 0 and "123.45" in r.stdout and "no RAPL here" in r.stdout and "2000" in r.stdout
    r, doc = zpctl_json("runs", "show", run.id, "--json")
    assert doc["perf"]["tokens_per_s"] == 123.45 and "per_step" not in doc["perf"]
