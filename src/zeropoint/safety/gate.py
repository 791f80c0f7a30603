"""Release gate: ASR per family against thresholds from the policy file.

Thresholds live under `redteam.thresholds` in the governance policy (`datasets/policy.yaml`), one maximum
ASR per family; a family above its threshold fails the gate. Families with no threshold are reported as
ungated, never silently passed. The point estimate is compared (as garak's pass/fail does); the interval is
reported beside it so a reader can see when a verdict rests on few attempts.
"""
from __future__ import annotations

from ..errors import ZeropointError

def load_thresholds(policy_path=None) -> tuple[dict[str, float], str]:
    """(thresholds per family, where they came from): the workspace policy file, else the packaged default."""
    from ..governance.policy import load_policy
    pol, src = load_policy(policy_path)
    return dict(pol.redteam.thresholds), f"policy {src} (version {pol.version})"


def parse_threshold_overrides(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        fam, _, val = item.partition("=")
        try:
            v = float(val)
        except ValueError:
            v = -1.0
        if not fam or not 0.0 <= v <= 1.0:
            raise ZeropointError(f"--threshold {item!r}: expected FAMILY=MAX_ASR with MAX_ASR in [0, 1], e.g. jailbreak=0.3")
        out[fam.strip()] = v
    return out


def evaluate_gate(summary: dict, thresholds: dict[str, float], source: str) -> dict:
    rows, passed = [], True
    for fam, s in summary["families"].items():
        thr = thresholds.get(fam)
        if thr is None:
            verdict = "UNGATED"
        elif s["asr"] is None:
            verdict = "NO DATA"
        else:
            verdict = "PASS" if s["asr"] <= thr else "FAIL"
        passed &= verdict != "FAIL"
        rows.append({"family": fam, "asr": s["asr"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                     "threshold": thr, "verdict": verdict})
    return {"passed": passed, "source": source, "families": rows,
            "failed_families": [r["family"] for r in rows if r["verdict"] == "FAIL"]}
