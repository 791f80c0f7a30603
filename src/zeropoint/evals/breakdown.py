"""Per-group scores with cluster-bootstrap confidence intervals, and counterfactual gaps (a zeropoint extension
to lm-eval's task YAML: the `breakdown` key).

    breakdown:
      by: category            # a document field: every metric is also reported per value of it
      cluster: template       # documents sharing this field are resampled together (they are not independent)
      counterfactual: group   # optional: within a cluster the documents differ only in this field; adds
                              # <metric>_gap = mean |score(g1) - score(g2)| over pairs of groups, per cluster
      fields: [id, category]  # document fields copied into each sample record (for paired comparisons)
      level: 0.95             # interval coverage
      n_boot: 2000            # bootstrap resamples (seeded, so a recomputation gives the same interval)

The interval is a percentile bootstrap over clusters: resample clusters with replacement, recompute the mean
over every document of the drawn clusters. Pairs filled from one template share its wording, so resampling
pairs one by one would understate the width (the red-team resamples probes, not generations, for the same reason).
"""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np

from ..errors import ConfigError

SPEC_KEYS = {"by", "cluster", "counterfactual", "fields", "level", "n_boot", "seed"}
DEFAULTS = {"cluster": None, "counterfactual": None, "fields": [], "level": 0.95, "n_boot": 2000, "seed": 0}


def parse_spec(spec, source: str = "task") -> dict:
    if not isinstance(spec, dict) or "by" not in spec:
        raise ConfigError(f"{source}: `breakdown` must be a mapping with at least `by: FIELD`")
    bad = set(spec) - SPEC_KEYS
    if bad:
        raise ConfigError(f"{source}: unknown `breakdown` keys {sorted(bad)}; known: {', '.join(sorted(SPEC_KEYS))}")
    out = {**DEFAULTS, **spec}
    if not 0.5 <= float(out["level"]) < 1.0 or int(out["n_boot"]) < 100:
        raise ConfigError(f"{source}: `breakdown` needs 0.5 <= level < 1 and n_boot >= 100")
    return out


def cluster_ci(values, clusters, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile interval of the mean of `values`, resampling whole clusters."""
    if not len(values):
        return None, None
    sums, counts = defaultdict(float), defaultdict(int)
    for v, c in zip(values, clusters):
        sums[c] += float(v)
        counts[c] += 1
    keys = list(sums)
    s = np.array([sums[k] for k in keys])
    n = np.array([counts[k] for k in keys], dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(keys), size=(n_boot, len(keys)))
    means = s[idx].sum(1) / n[idx].sum(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _cell(values, clusters, spec) -> dict:
    lo, hi = cluster_ci(values, clusters, float(spec["level"]), int(spec["n_boot"]), int(spec["seed"]))
    return {"value": float(np.mean(values)), "ci_low": lo, "ci_high": hi, "n": len(values),
            "clusters": len(set(clusters))}


def by_group(docs: list[dict], values: list[float], spec: dict) -> dict:
    """{group value: {value, ci_low, ci_high, n, clusters}} in first-seen order."""
    rows: dict = {}
    for i, (d, v) in enumerate(zip(docs, values)):
        g = d.get(spec["by"])
        c = d.get(spec["cluster"]) if spec["cluster"] else i
        rows.setdefault(g, ([], []))
        rows[g][0].append(v)
        rows[g][1].append(c)
    return {g: _cell(vs, cs, spec) for g, (vs, cs) in rows.items()}


def counterfactual_gaps(docs: list[dict], values: list[float], spec: dict) -> dict:
    """Per group value: the mean over clusters of the mean absolute difference of the scores of the cluster's
    counterfactual variants (every pair of them), with a bootstrap interval over clusters, and the mean score of
    each variant (the `counterfactual` field's value) across clusters."""
    field, by = spec["counterfactual"], spec["by"]
    clusters: dict = defaultdict(list)
    for d, v in zip(docs, values):
        clusters[(d.get(by), d.get(spec["cluster"]))].append((d.get(field), float(v)))
    per: dict = defaultdict(lambda: ([], [], defaultdict(list)))
    for (g, c), rows in clusters.items():
        diffs = [abs(a[1] - b[1]) for a, b in combinations(rows, 2)]
        if not diffs:
            continue
        per[g][0].append(float(np.mean(diffs)))
        per[g][1].append(c)
        for variant, v in rows:
            per[g][2][variant].append(v)
    out = {}
    for g, (gaps, cs, variants) in per.items():
        cell = _cell(gaps, cs, spec)
        means = {k: float(np.mean(v)) for k, v in variants.items()}
        cell.update(variants=means, spread=max(means.values()) - min(means.values()))
        out[g] = cell
    return out


def apply(spec: dict, docs: list[dict], per_metric: dict[str, list], metrics: dict, samples: list[dict]) -> None:
    """Add `breakdown` to every metric (and `<metric>_gap` when counterfactual), and the spec's fields to samples."""
    for s, d in zip(samples, docs):
        for f in spec["fields"]:
            s.setdefault(f, d.get(f))
    info = {"by": spec["by"], "cluster": spec["cluster"], "level": spec["level"], "n_boot": spec["n_boot"],
            "interval": "percentile bootstrap over clusters"}
    for name, values in list(per_metric.items()):
        if name not in metrics or not values or not all(isinstance(v, (int, float)) for v in values):
            continue
        metrics[name]["breakdown"] = {**info, "groups": by_group(docs, values, spec)}
        if spec["counterfactual"]:
            groups = counterfactual_gaps(docs, values, spec)
            gaps = [g["value"] for g in groups.values()]
            metrics[f"{name}_gap"] = {
                "value": float(np.mean(gaps)) if gaps else None, "stderr": None, "aggregation": "mean over groups",
                "higher_is_better": False, "n": sum(g["clusters"] for g in groups.values()),
                "note": f"per {spec['cluster']}: mean |{name}(a) - {name}(b)| over pairs of {spec['counterfactual']} "
                        f"values; the value is the mean over {spec['by']} groups",
                "breakdown": {**info, "counterfactual": spec["counterfactual"], "groups": groups}}
