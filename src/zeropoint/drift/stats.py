"""Per-feature drift tests chosen the way Evidently chooses them by default (`get_default_stattest`):

| feature                         | reference rows <= 1000        | reference rows > 1000                    |
|---------------------------------|-------------------------------|------------------------------------------|
| numeric, > 5 distinct values    | Kolmogorov-Smirnov, p < 0.05  | Wasserstein / std(reference) >= 0.1      |
| categorical (or <= 5 values)    | chi-square p < 0.05 (Z-test   | Jensen-Shannon distance >= 0.1           |
|                                 | for two categories)           |                                          |

PSI is reported next to every feature (0.1 = moderate, 0.25 = significant shift) on the same binning
Evidently uses: Sturges bins over both samples for numbers, categories for categorical data, empty bins
filled with 1e-4 so logarithms stay finite. The dataset is drifted when the share of drifted features is at
least `drift_share` (Evidently's default 0.5).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

SMALL_N = 1000
KS_P = 0.05
DIST_THRESHOLD = 0.1
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25
DRIFT_SHARE = 0.5


@dataclass
class FeatureDrift:
    feature: str
    kind: str               # numeric | categorical
    test: str               # ks | wasserstein_norm | jensen_shannon | chisquare | z
    statistic: float        # p-value for ks/chisquare/z; a distance otherwise
    threshold: float
    drifted: bool
    psi: float | None
    psi_level: str          # none | moderate | significant
    n_reference: int
    n_current: int
    reference_mean: float | None = None
    current_mean: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _binned(ref, cur, kind: str):
    """Evidently's get_binned_data(feel_zeroes=True): shares per bin/category for both samples."""
    if kind == "numeric":
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / len(ref)
        c = np.histogram(cur, edges)[0] / len(cur)
    else:
        keys = sorted(set(ref.tolist()) | set(cur.tolist()), key=str)
        r = np.array([np.sum(ref == k) for k in keys], dtype=np.float64) / len(ref)
        c = np.array([np.sum(cur == k) for k in keys], dtype=np.float64) / len(cur)
    r = np.where(r == 0, 1e-4, r)
    c = np.where(c == 0, 1e-4, c)
    return r, c


def psi(ref, cur, kind: str = "numeric") -> float:
    r, c = _binned(np.asarray(ref), np.asarray(cur), kind)
    return float(np.sum((r - c) * np.log(r / c)))


def psi_level(v: float | None) -> str:
    if v is None:
        return "none"
    return "significant" if v >= PSI_SIGNIFICANT else "moderate" if v >= PSI_MODERATE else "none"


def wasserstein_norm(ref, cur) -> float:
    norm = max(float(np.std(ref)), 1e-3)   # Evidently: max(std(reference), 0.001)
    return float(wasserstein_distance(ref, cur) / norm)


def jensen_shannon(ref, cur, kind: str) -> float:
    r, c = _binned(np.asarray(ref), np.asarray(cur), kind)
    return float(jensenshannon(r, c))


def jensen_shannon_dist(p: np.ndarray, q: np.ndarray) -> float:
    """JS distance between two (unnormalised) distributions over the same support."""
    p = np.where(p == 0, 1e-4 * p.sum() / max(len(p), 1), p).astype(np.float64)
    q = np.where(q == 0, 1e-4 * q.sum() / max(len(q), 1), q).astype(np.float64)
    return float(jensenshannon(p / p.sum(), q / q.sum()))


def choose_test(ref, kind: str) -> str:
    n_unique = len(np.unique(ref))
    if kind == "numeric" and n_unique > 5:
        return "ks" if len(ref) <= SMALL_N else "wasserstein_norm"
    if len(ref) <= SMALL_N:
        return "z" if n_unique <= 2 else "chisquare"
    return "jensen_shannon"


def feature_drift(name: str, ref, cur, kind: str = "numeric", test: str | None = None) -> FeatureDrift:
    ref, cur = np.asarray(ref), np.asarray(cur)
    if len(ref) < 2 or len(cur) < 2:
        raise ValueError(f"feature {name}: need at least 2 values on each side (have {len(ref)} and {len(cur)})")
    test = test or choose_test(ref, kind)
    cat = "categorical" if kind != "numeric" or len(np.unique(ref)) <= 5 else "numeric"
    if test == "ks":
        stat, thr = float(stats.ks_2samp(ref, cur).pvalue), KS_P
        drifted = stat < thr
    elif test == "wasserstein_norm":
        stat, thr = wasserstein_norm(ref, cur), DIST_THRESHOLD
        drifted = stat >= thr
    elif test == "jensen_shannon":
        stat, thr = jensen_shannon(ref, cur, cat), DIST_THRESHOLD
        drifted = stat >= thr
    elif test == "chisquare":
        keys = sorted(set(ref.tolist()) | set(cur.tolist()), key=str)
        r = np.array([np.sum(ref == k) for k in keys], dtype=np.float64)
        c = np.array([np.sum(cur == k) for k in keys], dtype=np.float64)
        stat = float(stats.chi2_contingency(np.stack([r, c]))[1]) if len(keys) > 1 else 1.0
        thr = KS_P
        drifted = stat < thr
    elif test == "z":
        k = sorted(set(ref.tolist()) | set(cur.tolist()), key=str)[0]
        p1, p2 = np.mean(ref == k), np.mean(cur == k)
        p = (p1 * len(ref) + p2 * len(cur)) / (len(ref) + len(cur))
        se = np.sqrt(p * (1 - p) * (1 / len(ref) + 1 / len(cur)))
        stat = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(p1 - p2) / se))
        thr = KS_P
        drifted = stat < thr
    else:
        raise ValueError(f"unknown drift test {test!r}")
    ps = psi(ref, cur, cat)
    numeric = cat == "numeric"
    return FeatureDrift(name, cat, test, stat, thr, bool(drifted), ps, psi_level(ps), len(ref), len(cur),
                        float(np.mean(ref)) if numeric else None, float(np.mean(cur)) if numeric else None)


def dataset_drift(results: list[FeatureDrift], drift_share: float = DRIFT_SHARE) -> dict:
    n = len(results)
    k = sum(r.drifted for r in results)
    share = k / n if n else 0.0
    return {"n_features": n, "n_drifted": k, "share_drifted": share, "drift_share_threshold": drift_share,
            "dataset_drift": bool(n and share >= drift_share)}
