"""`zpctl drift check`: compare a current eval with a saved baseline, metric by metric.

A metric alarms when it got worse (direction-aware: accuracy down, perplexity up) by more than the policy's
absolute OR relative threshold, AND the change is significant given both standard errors
(|delta| > z * sqrt(se_b^2 + se_c^2)). Where no standard error exists the significance test is skipped and the
report says so. Identical numbers never alarm. Exit code 3 on any alarm (the CLI), a JSON report and a metric
history PNG are written, and an audit event is appended.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import load_yaml_text
from ..errors import ConfigError
from ..evals.harness import load_baseline, load_results
from ..governance.audit import append_event
from ..workspace import atomic_write_text, workspace
from . import plots

ALARM_EXIT = 3
DEFAULT_POLICY = {
    "z": 1.96,
    "default": {"abs": 0.02, "rel": 0.05},
    "metrics": {
        "acc": {"abs": 0.02, "rel": None}, "acc_norm": {"abs": 0.02, "rel": None},
        "exact_match": {"abs": 0.02, "rel": None},
        "word_perplexity": {"abs": None, "rel": 0.05}, "byte_perplexity": {"abs": None, "rel": 0.02},
        "bits_per_byte": {"abs": 0.02, "rel": 0.02}, "token_perplexity": {"abs": None, "rel": 0.05},
        "perplexity": {"abs": None, "rel": 0.05}, "top1": {"abs": 0.02, "rel": None},
        "top5": {"abs": 0.02, "rel": None},
    },
}
LOWER_IS_BETTER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"}


def load_policy(path: str | Path | None) -> dict:
    if path is None:
        return DEFAULT_POLICY
    try:
        pol = load_yaml_text(Path(path).read_bytes(), f"drift policy {path}") or {}
    except OSError as e:
        raise ConfigError(f"cannot read drift policy {path}: {e}") from None
    unknown = set(pol) - {"z", "default", "metrics"}
    if unknown:
        raise ConfigError(f"drift policy {path}: unknown keys {sorted(unknown)} (allowed: z, default, metrics)")
    for name, th in [("default", pol.get("default") or {})] + list((pol.get("metrics") or {}).items()):
        if not isinstance(th, dict) or set(th) - {"abs", "rel", "higher_is_better"}:
            raise ConfigError(f"drift policy {path}: thresholds for {name!r} must be a mapping with abs / rel "
                              "(and optionally higher_is_better)")
        for k in ("abs", "rel"):
            v = th.get(k)
            if v is not None and (not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"drift policy {path}: {name}.{k} must be a non-negative number or null, got {v!r}")
    return {"z": float(pol.get("z", DEFAULT_POLICY["z"])), "default": {**DEFAULT_POLICY["default"], **(pol.get("default") or {})},
            "metrics": {**DEFAULT_POLICY["metrics"], **(pol.get("metrics") or {})}}


def _se(m: dict) -> float | None:
    se = m.get("stderr")
    if se is None:
        se = m.get("stderr_bootstrap")
    return None if se is None or (isinstance(se, float) and math.isnan(se)) else float(se)


def compare_metric(name: str, base: dict, cur: dict, policy: dict) -> dict:
    th = {**policy["default"], **(policy["metrics"].get(name) or {})}
    hib = th.get("higher_is_better", base.get("higher_is_better", name not in LOWER_IS_BETTER))
    b, c = float(base["value"]), float(cur["value"])
    delta = c - b
    worse = -delta if hib else delta            # > 0 means it got worse
    rel = worse / abs(b) if b else (math.inf if worse > 0 else 0.0)
    over_abs = th.get("abs") is not None and worse > th["abs"]
    over_rel = th.get("rel") is not None and rel > th["rel"]
    se_b, se_c = _se(base), _se(cur)
    if se_b is not None and se_c is not None:
        se = math.sqrt(se_b ** 2 + se_c ** 2)
        significant = worse > policy["z"] * se if se > 0 else worse > 0
        sig_note = f"z = {worse / se:.2f}" if se > 0 else "zero standard error"
    else:
        se, significant, sig_note = None, True, "no standard error available: threshold alone decides"
    alarm = bool(worse > 0 and (over_abs or over_rel) and significant)
    return {"metric": name, "baseline": b, "current": c, "delta": delta, "worse_by": worse, "rel_worse": rel,
            "higher_is_better": hib, "threshold_abs": th.get("abs"), "threshold_rel": th.get("rel"),
            "over_abs": bool(over_abs), "over_rel": bool(over_rel), "stderr_combined": se,
            "significant": bool(significant), "significance": sig_note, "alarm": alarm}


def check(baseline_name: str, current: str, policy_path: str | None = None, actor: str | None = None) -> dict:
    base = load_baseline(baseline_name)
    cur = load_results(current)
    policy = load_policy(policy_path)
    rows, missing = [], []
    for task, bt in base["tasks"].items():
        ct = cur["tasks"].get(task)
        if ct is None:
            missing.append(task)
            continue
        for m, bm in bt["metrics"].items():
            if m in ct["metrics"] and isinstance(bm.get("value"), (int, float)):
                rows.append({"task": task, **compare_metric(m, bm, ct["metrics"][m], policy)})
    if not rows:
        raise ConfigError(f"baseline {baseline_name!r} and eval {cur['eval_id']} share no task metrics "
                          f"(baseline tasks {sorted(base['tasks'])}, current {sorted(cur['tasks'])})")
    alarms = [r for r in rows if r["alarm"]]
    out_dir = workspace().evals / cur["eval_id"]
    report = {"baseline": baseline_name, "baseline_eval_id": base["eval_id"], "current_eval_id": cur["eval_id"],
              "baseline_model_sha256": base["model"].get("sha256"), "current_model_sha256": cur["model"].get("sha256"),
              "policy": policy, "policy_file": str(policy_path) if policy_path else None, "comparisons": rows,
              "missing_tasks": missing, "alarm": bool(alarms), "n_alarms": len(alarms),
              "exit_code": ALARM_EXIT if alarms else 0}
    report["plots"] = _history_plots(base, cur, out_dir)
    path = out_dir / f"drift_{baseline_name}.json"
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")
    report["report_path"] = str(path)
    try:
        append_event(actor or "zpctl", "drift_check", f"eval:{cur['eval_id']}",
                     {"baseline": baseline_name, "alarms": [f"{a['task']}/{a['metric']}" for a in alarms],
                      "report": str(path)}, outcome="alarm" if alarms else "ok")
        report["audit"] = "appended"
    except ImportError:
        report["audit"] = "governance.audit not available"
    return report


def _history_plots(base: dict, cur: dict, out_dir: Path) -> list[str]:
    """Metric history across every eval in the workspace that ran the same task, oldest first."""
    evals = []
    for f in sorted(workspace().evals.glob("*/results.json")):
        try:
            evals.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    evals.sort(key=lambda r: r.get("started_at") or "")
    pngs = []
    for task, bt in cur["tasks"].items():
        for m, cm in bt["metrics"].items():
            pts = [{"label": r["eval_id"][-13:], "value": r["tasks"][task]["metrics"][m]["value"],
                    "stderr": _se(r["tasks"][task]["metrics"][m])}
                   for r in evals if task in r.get("tasks", {}) and m in r["tasks"][task]["metrics"]]
            if not pts:
                continue
            bval = base["tasks"].get(task, {}).get("metrics", {}).get(m, {}).get("value")
            pngs.append(str(plots.metric_history(pts, out_dir / f"history_{task}_{m}.png", f"{task} / {m}", bval)))
    return pngs
