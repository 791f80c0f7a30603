"""Vision metrics on numpy arrays: top-k accuracy, confusion matrix (+PNG), zero-shot, retrieval Recall@K.

Everything here takes model outputs that were really computed (logits, embeddings) and returns plain dicts
with the chance baseline next to each figure, so a reader can see how far above chance a number is.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from ..errors import ZeropointError
from ..workspace import atomic_write_bytes


def _check(logits: np.ndarray, labels: np.ndarray) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ZeropointError(f"expected logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ZeropointError("no examples to evaluate")


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> dict:
    """{'top1': .., 'top5': .., 'n': N}; a k larger than the class count is reported as null with the reason."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    _check(logits, labels)
    # stable ranking: ties broken by class index, so results do not depend on the sort implementation
    order = np.argsort(-logits, axis=1, kind="stable")
    out: dict = {"n": int(len(labels))}
    for k in ks:
        if k > logits.shape[1]:
            out[f"top{k}"] = None
            out[f"top{k}_null_reason"] = f"only {logits.shape[1]} classes"
            continue
        out[f"top{k}"] = float((order[:, :k] == labels[:, None]).any(axis=1).mean())
    out["chance_top1"] = 1.0 / logits.shape[1]
    return out


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class, counts."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    tot = cm.sum(1)
    return {c: (float(cm[i, i] / tot[i]) if tot[i] else None) for i, c in enumerate(classes)}


def save_confusion_png(cm: np.ndarray, classes: list[str], path: Path | str, title: str = "confusion matrix") -> Path:
    """Row-normalised heat map with counts in the cells; written atomically."""
    matplotlib.use("Agg")
    n = len(classes)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 1.5)), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def classification_report(logits: np.ndarray, labels: np.ndarray, classes: list[str], ks=(1, 5)) -> dict:
    acc = topk_accuracy(logits, labels, ks)
    cm = confusion_matrix(np.argmax(logits, 1), labels, len(classes))
    majority = float(np.bincount(labels, minlength=len(classes)).max() / len(labels))
    return {**acc, "majority_baseline": majority, "per_class_top1": per_class_accuracy(cm, classes),
            "confusion_matrix": cm.tolist(), "classes": list(classes)}


# ---- embeddings (CLIP) ---------------------------------------------------------------------------------------
def l2norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _recall(sim: np.ndarray, ks) -> dict:
    """sim[i, j] = similarity of query i and candidate j; the right candidate of query i is j = i."""
    n = sim.shape[0]
    right = sim[np.arange(n), np.arange(n)]
    # rank = number of candidates strictly better than the right one (ties count in the query's favour)
    rank = (sim > right[:, None]).sum(1)
    out = {f"R@{k}": float((rank < k).mean()) for k in ks}
    out["median_rank"] = float(np.median(rank) + 1)
    return out


def retrieval_recall(img_emb: np.ndarray, txt_emb: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Image->text and text->image Recall@K for paired rows (row i of each is one pair), with the random baseline
    K/N for each K."""
    if img_emb.shape != txt_emb.shape or img_emb.ndim != 2:
        raise ZeropointError(f"expected paired embeddings of equal shape (N, D), got {img_emb.shape} and {txt_emb.shape}")
    sim = l2norm(img_emb) @ l2norm(txt_emb).T
    n = sim.shape[0]
    return {"n": int(n), "image_to_text": _recall(sim, ks), "text_to_image": _recall(sim.T, ks),
            "random_baseline": {f"R@{k}": min(1.0, k / n) for k in ks}}


def zero_shot(img_emb: np.ndarray, class_txt_emb: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Classify each image as the class whose prompt embedding is most similar; accuracy vs chance and majority."""
    sim = l2norm(img_emb) @ l2norm(class_txt_emb).T
    rep = classification_report(sim, np.asarray(labels), classes, ks=(1, 5))
    rep["chance"] = 1.0 / len(classes)
    return rep
