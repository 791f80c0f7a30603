"""`zpctl runs compare A B ...`: overlaid loss and validation curves, a final-metrics table, the config keys that
differ, and the datasets each run read, with a loud warning when they are not the same data.

    cmp = compare_runs(["run-a", "run-b"])      # JSON-safe dict (what --json prints and the control center shows)

The figures are in `plots.py`, so the API server, which serves this dict, does not load matplotlib.
"""
from __future__ import annotations

from ..errors import ZeropointError
from ..evidence import load_run
from .series import dataset_ids, final_metrics, flatten, run_series

ABSENT = "(absent)"
CURVES = {"train_loss": "train/loss", "val_loss": "eval/val_loss"}
# the table's rows, in this order when present; anything else a run measured follows
TABLE_FIRST = ["steps", "final_train_loss", "heldout_val_loss", "heldout_val_ppl", "tokens_per_s", "images_per_s",
               "steady_step_s", "compile_s", "mfu", "energy_j", "rss_peak_bytes"]


def config_diff(configs: list[dict]) -> dict[str, list]:
    """Flattened keys whose values are not all equal, with each run's value (ABSENT where a run lacks the key)."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k, ABSENT) for f in flat] for k in keys
            if len({repr(f.get(k, ABSENT)) for f in flat}) > 1}


def data_check(datasets: list[list[dict]], ids: list[str]) -> dict:
    """Same data means the same dataset names with the same content hashes in every run."""
    keyed = [sorted((d["name"], d["sha256"]) for d in ds) for ds in datasets]
    same = all(k == keyed[0] for k in keyed)
    warning = None
    if not same:
        parts = [f"{rid}: " + (", ".join(f"{n}@{(h or 'no-hash')[:12]}" for n, h in k) or "no governed data")
                 for rid, k in zip(ids, keyed)]
        warning = ("DIFFERENT DATA: these runs did not train on the same datasets (name and SHA-256), so their "
                   "losses and metrics are not comparable as a change of settings alone. " + "; ".join(parts))
    return {"same": same, "warning": warning, "per_run": dict(zip(ids, datasets))}


def compare_runs(run_ids: list[str]) -> dict:
    if len(run_ids) < 2:
        raise ZeropointError("compare needs at least two runs: `zpctl runs compare RUN_A RUN_B [...]`; "
                             "list runs with `zpctl runs ls`")
    runs = [load_run(r) for r in run_ids]
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise ZeropointError(f"a run is named twice in {run_ids}; compare distinct runs")
    series = [run_series(r) for r in runs]
    finals = [final_metrics(s) for s in series]
    diff = config_diff([r.record.get("config") or {} for r in runs])
    data = data_check([dataset_ids(r) for r in runs], ids)
    warnings = [data["warning"]] if data["warning"] else []
    kinds = {r.record.get("kind") for r in runs}
    if len(kinds) > 1:
        warnings.append(f"different recipes ({', '.join(sorted(map(str, kinds)))}): losses are on different tasks")
    if any(r.record.get("simulated") for r in runs):
        warnings.append("SIMULATED: " + ", ".join(r.id for r in runs if r.record.get("simulated"))
                        + " did not run on real compute")
    devices = {r.record.get("device") for r in runs}
    if len(devices) > 1:
        warnings.append(f"different devices ({', '.join(map(str, devices))}): speed and energy are not comparable")
    names = [k for k in TABLE_FIRST if any(k in f for f in finals)]
    names += sorted({k for f in finals for k in f if k not in names and k not in ("null_reasons", "simulated")})
    table = [{"metric": k, "values": [f.get(k) for f in finals],
              "null_reasons": [f["null_reasons"].get(k) for f in finals]} for k in names]
    return {
        "runs": [{"id": r.id, "kind": r.record.get("kind"), "status": s.status, "device": r.record.get("device"),
                  "simulated": bool(r.record.get("simulated")), "config_sha256": r.record.get("config_sha256"),
                  "started_at": r.record.get("started_at"), "datasets": dataset_ids(r), "final": f,
                  "label": _label(r.id, diff, i),
                  "curves": {name: s.xy(key) for name, key in CURVES.items()}}
                 for i, (r, s, f) in enumerate(zip(runs, series, finals))],
        "config_diff": diff,
        "data": data,
        "metrics": table,
        "warnings": warnings,
    }


def _label(run_id: str, diff: dict, i: int) -> str:
    """The run id, plus the differing settings when there are few enough to read in a legend."""
    if not diff or len(diff) > 3:
        return run_id
    return f"{run_id} (" + ", ".join(f"{k}={v[i]}" for k, v in diff.items()) + ")"
