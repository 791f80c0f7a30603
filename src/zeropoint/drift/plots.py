"""PNG plots for drift reports (matplotlib, Agg backend: no display, deterministic files)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from ..workspace import atomic_write_bytes


def _plt():
    matplotlib.use("Agg")
    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def feature_histograms(ref: dict, cur: dict, results: list, path: Path, title: str) -> Path:
    """One panel per feature: reference vs current histograms on shared bins, with the test's verdict."""
    plt = _plt()
    names = [r.feature for r in results if r.feature in ref]
    cols = 3
    rows = max(1, (len(names) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    by = {r.feature: r for r in results}
    for ax, n in zip(axes.flat, names):
        ax.set_visible(True)
        r, c = np.asarray(ref[n], np.float64), np.asarray(cur[n], np.float64)
        edges = np.histogram_bin_edges(np.concatenate([r, c]), bins=30)
        ax.hist(r, edges, density=True, alpha=0.55, label="reference")
        ax.hist(c, edges, density=True, alpha=0.55, label="current")
        res = by[n]
        ax.set_title(f"{n}: {res.test}={res.statistic:.3g} {'DRIFT' if res.drifted else 'ok'}",
                     fontsize=9, color="red" if res.drifted else "black")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def profile_bars(words: list[str], ref: np.ndarray, cur: np.ndarray, path: Path, title: str, k: int = 30) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 3.5))
    x = np.arange(min(k, len(words)))
    ax.bar(x - 0.2, (ref / ref.sum())[:len(x)], 0.4, label="reference")
    ax.bar(x + 0.2, (cur / cur.sum())[:len(x)], 0.4, label="current")
    ax.set_xticks(x, words[:len(x)], rotation=70, fontsize=7)
    ax.set_ylabel("share of tokens")
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)


def metric_history(points: list[dict], path: Path, title: str, baseline: float | None = None) -> Path:
    """points: [{label, value, stderr}] in time order; error bars are +-1.96 stderr where known."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(points)), 3.2))
    x = np.arange(len(points))
    vals = [p["value"] for p in points]
    err = [1.96 * (p.get("stderr") or 0.0) for p in points]
    ax.errorbar(x, vals, yerr=err, fmt="o-", capsize=3)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", label="baseline")
        ax.legend(fontsize=8)
    ax.set_xticks(x, [p["label"] for p in points], rotation=30, fontsize=7, ha="right")
    ax.set_title(title)
    return _save(fig, path)
