"""Regression-check logic on hand-written results files (the real-model acceptance is test_drift_real.py)."""
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeropoint.cli.main import app
from zeropoint.drift.check import compare_metric, load_policy
from zeropoint.errors import ConfigError
from zeropoint.evals.harness import save_baseline


def _results(eval_id, acc, acc_se, ppl, model_sha="a" * 64):
    d = Path(os.environ["ZP_HOME"]) / "evals" / eval_id
    d.mkdir(parents=True)
    res = {"eval_id": eval_id, "model": {"sha256": model_sha}, "started_at": eval_id, "tasks": {
        "mmlu_dev": {"metrics": {"acc": {"value": acc, "stderr": acc_se, "higher_is_better": True}}},
        "ppl": {"metrics": {"word_perplexity": {"value": ppl, "stderr": None, "stderr_bootstrap": 0.5,
                                                "higher_is_better": False}}}}}
    (d / "results.json").write_text(json.dumps(res))
    return eval_id


def test_direction_thresholds_and_significance():
    pol = load_policy(None)
    base = {"value": 0.40, "stderr": 0.02, "higher_is_better": True}
    assert not compare_metric("acc", base, dict(base), pol)["alarm"]                       # identical: quiet
    assert compare_metric("acc", base, {"value": 0.30, "stderr": 0.02}, pol)["alarm"]      # -10 points, z=3.5
    assert not compare_metric("acc", base, {"value": 0.37, "stderr": 0.02}, pol)["alarm"]  # over abs, not significant
    assert not compare_metric("acc", base, {"value": 0.50, "stderr": 0.02}, pol)["alarm"]  # better: never alarms
    ppl = {"value": 20.0, "stderr": None, "stderr_bootstrap": 0.2, "higher_is_better": False}
    r = compare_metric("word_perplexity", ppl, {"value": 23.0, "stderr_bootstrap": 0.2}, pol)
    assert r["alarm"] and r["over_rel"] and not r["higher_is_better"]                     # perplexity up = worse
    assert not compare_metric("word_perplexity", ppl, {"value": 15.0, "stderr_bootstrap": 0.2}, pol)["alarm"]


def test_policy_file_is_validated(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("default: {abs: -1}\n")
    with pytest.raises(ConfigError, match="non-negative"):
        load_policy(p)
    p.write_text("thresholds: {}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_policy(p)
    p.write_text("z: 3\nmetrics: {acc: {abs: 0.2}}\n")
    assert load_policy(p)["metrics"]["acc"]["abs"] == 0.2 and load_policy(p)["z"] == 3.0


def test_cli_drift_check_exit_codes_report_and_audit(tmp_path):
    b = _results("eval-1", 0.40, 0.02, 20.0)
    save_baseline(b, "base")
    same = _results("eval-2", 0.40, 0.02, 20.0)
    worse = _results("eval-3", 0.30, 0.02, 26.0, model_sha="b" * 64)
    r = CliRunner().invoke(app, ["drift", "check", "--baseline", "base", "--current", same, "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["drift", "check", "--baseline", "base", "--current", worse, "--json"])
    assert r.exit_code == 3, r.output
    rep = json.loads(r.output)
    assert rep["n_alarms"] == 2 and {c["metric"] for c in rep["comparisons"] if c["alarm"]} == {"acc", "word_perplexity"}
    assert Path(rep["report_path"]).is_file() and all(open(p, "rb").read(4) == b"\x89PNG" for p in rep["plots"])
    audit = Path(os.environ["ZP_HOME"]) / "datasets" / "audit.jsonl"
    events = [json.loads(l) for l in audit.read_text().splitlines()]
    assert [e.get("outcome") for e in events if e.get("action") == "drift_check"] == ["ok", "alarm"]
    # a tampered baseline is refused, not trusted
    bp = Path(os.environ["ZP_HOME"]) / "evals" / "baselines" / "base.json"
    body = json.loads(bp.read_text())
    body["results"]["tasks"]["mmlu_dev"]["metrics"]["acc"]["value"] = 0.1
    bp.write_text(json.dumps(body))
    r = CliRunner().invoke(app, ["drift", "check", "--baseline", "base", "--current", worse])
    assert r.exit_code == 2 and "hash check" in r.output
    r = CliRunner().invoke(app, ["drift", "check", "--baseline", "nope", "--current", worse])
    assert r.exit_code == 2 and "no baseline" in r.output
