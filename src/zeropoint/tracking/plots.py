"""The figures of `tracking/`: a comparison's overlaid curves (`zpctl runs compare --png`) and one run's loss
curve (the PNG artifact of an MLflow export). Built on matplotlib's `Figure`, without pyplot's global state.

    fig = compare_figure(compare_runs(["run-a", "run-b"]))   # one line per run per panel, legend = run ids
    save_png(fig, "cmp.png")
"""
from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from ..workspace import atomic_write_bytes
from .series import RunSeries


def compare_figure(cmp: dict):
    """Two panels, training loss and validation loss per step; one line per run in each, the legend naming runs."""
    fig = Figure(figsize=(11, 4.2))
    titles = {"train_loss": "training loss", "val_loss": "validation loss (held out)"}
    for ax, (curve, title) in zip(fig.subplots(1, 2), titles.items()):
        for r in cmp["runs"]:
            pts = r["curves"][curve]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if curve == "val_loss" else None,
                    markersize=4, linewidth=1.4, label=r["label"])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if not any(r["curves"][curve] for r in cmp["runs"]):
            ax.text(0.5, 0.5, "no rows of this kind in these runs", ha="center", transform=ax.transAxes)
        ax.legend(fontsize=8)
    if cmp["warnings"]:
        fig.suptitle("\n".join(w[:140] for w in cmp["warnings"]), color="#b91c1c", fontsize=9)
    fig.tight_layout()
    return fig


def save_png(fig, path: Path | str) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def run_loss_png(rs: RunSeries, path: Path | str) -> Path:
    """One run's training and validation loss per step (the loss-curve artifact of an export)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, label, marker in (("train/loss", "train loss", None), ("eval/val_loss", "validation loss", "o")):
        pts = rs.points(name)
        if pts:
            ax.plot([p.step for p in pts], [p.value for p in pts], marker=marker, markersize=4, label=label)
    ax.set(title=f"{rs.run.id}", xlabel="step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)
