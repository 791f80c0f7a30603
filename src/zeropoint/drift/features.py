"""Features that drift is measured on: per-document text statistics, a corpus token-frequency profile, and
per-image brightness / contrast / edge statistics. Loaders accept what the appliance holds on disk."""
from __future__ import annotations

import gzip
import json
import json as _json
import re
import struct
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tinygrad import TinyJit

from ..checkpoint import load_checkpoint
from ..data.images import normalize, resize
from ..errors import ZeropointError
from ..evals.harness import _vit_checkpoint
from ..models.vit import ViTConfig, apply_batched, to_tensors, vit_features

WORD = re.compile(r"[A-Za-z']+|\d+")
_ALPHA_SPACE = re.compile(r"[^\W\d_]|\s")   # regexes count in C: a 10 MB corpus in well under a second
_UPPER = re.compile(r"[A-Z]")
_DIGIT = re.compile(r"\d")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class DriftInputError(ZeropointError):
    pass


# ---- loading --------------------------------------------------------------------------------------------------
def load_texts(src: str | Path, max_docs: int | None = None) -> list[str]:
    """Documents from a directory (*.txt files, else *.json / *.jsonl with a "text" field, recursively), a
    .jsonl/.json file of {"text": ...} records, or one .txt file (one document per blank-line paragraph)."""
    p = Path(src)
    if not p.exists():
        raise DriftInputError(f"corpus {src} does not exist; pass a directory of .txt/.json files, a .jsonl file "
                              "or a .txt file")
    docs: list[str] = []
    if p.is_dir():
        txt = sorted(q for q in p.rglob("*.txt") if q.is_file())
        if txt:
            docs = [q.read_text(encoding="utf-8", errors="replace") for q in txt]
        else:
            for q in sorted(p.rglob("*.json*")):
                docs += _json_texts(q)
    elif p.suffix in (".jsonl", ".json"):
        docs = _json_texts(p)
    else:
        docs = [d for d in re.split(r"\n\s*\n", p.read_text(encoding="utf-8", errors="replace")) if d.strip()]
    docs = [d for d in docs if d.strip()]
    if len(docs) < 2:
        raise DriftInputError(f"corpus {src} has {len(docs)} non-empty documents; drift tests need at least 2")
    return docs[:max_docs] if max_docs else docs


def _json_texts(q: Path) -> list[str]:
    text = q.read_text(encoding="utf-8", errors="replace")
    try:
        recs = json.loads(text) if q.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise DriftInputError(f"{q} is not valid JSON ({e})") from None
    recs = recs if isinstance(recs, list) else [recs]
    return [r["text"] for r in recs if isinstance(r, dict) and isinstance(r.get("text"), str)]


def load_images(src: str | Path, max_images: int | None = None) -> np.ndarray:
    """Grayscale float images in [0, 1] as a list-like array of 2-D arrays: from an IDX(.gz) file (MNIST
    format) or a directory of image files (RGBA composited on white)."""
    p = Path(src)
    if p.is_file() and ("idx" in p.name or p.suffix == ".gz"):
        raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
        magic, = struct.unpack(">I", raw[:4])
        if magic != 2051:
            raise DriftInputError(f"{p} is not an IDX image file (magic {magic}, expected 2051)")
        n, h, w = struct.unpack(">III", raw[4:16])
        n = min(n, max_images) if max_images else n
        return np.frombuffer(raw, np.uint8, n * h * w, 16).reshape(n, h, w).astype(np.float32) / 255.0
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)[:max_images or None]
        if len(files) < 2:
            raise DriftInputError(f"{p} holds {len(files)} images; drift tests need at least 2")
        out = []
        for q in files:
            im = Image.open(q).convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            out.append(np.asarray(Image.alpha_composite(bg, im).convert("L"), dtype=np.float32) / 255.0)
        return out
    raise DriftInputError(f"image source {src} is neither an IDX(.gz) file nor a directory of images")


# ---- text features --------------------------------------------------------------------------------------------
TEXT_FEATURES = ("n_chars", "n_words", "mean_word_len", "oov_rate", "non_alpha_share", "upper_share",
                 "digit_share", "type_token_ratio")


@lru_cache(maxsize=4096)
def words_of(doc: str) -> tuple[str, ...]:
    """Lower-cased words of a document; cached, because features, vocabulary and word profiles all read them."""
    return tuple(w.lower() for w in WORD.findall(doc))


def text_features(docs: list[str], vocab: set[str]) -> dict[str, np.ndarray]:
    """Per-document numbers. `oov_rate` is against `vocab`, built from reference documents not measured here."""
    rows = []
    for d in docs:
        words = words_of(d)
        nw = max(len(words), 1)
        nc = max(len(d), 1)
        letters_or_space = len(_ALPHA_SPACE.findall(d))
        rows.append((len(d), len(words), sum(map(len, words)) / nw, sum(w not in vocab for w in words) / nw,
                     (len(d) - letters_or_space) / nc, len(_UPPER.findall(d)) / nc, len(_DIGIT.findall(d)) / nc,
                     len(set(words)) / nw))
    arr = np.array(rows, dtype=np.float64)
    return {f: arr[:, i] for i, f in enumerate(TEXT_FEATURES)}


def vocabulary(docs: list[str]) -> set[str]:
    return {w for d in docs for w in words_of(d)}


def token_profile(docs: list[str], top: list[str]) -> np.ndarray:
    """Counts of each of `top` words plus one bucket for everything else."""
    c = Counter(w for d in docs for w in words_of(d))
    known = [c.get(w, 0) for w in top]
    return np.array(known + [sum(c.values()) - sum(known)], dtype=np.float64)


def top_words(docs: list[str], k: int = 200) -> list[str]:
    c = Counter(w for d in docs for w in words_of(d))
    return [w for w, _ in c.most_common(k)]


# ---- image features -------------------------------------------------------------------------------------------
IMAGE_FEATURES = ("brightness", "contrast", "edge_density", "dark_share")


def image_features(images) -> dict[str, np.ndarray]:
    rows = []
    for im in images:
        im = np.asarray(im, np.float32)
        gx, gy = np.abs(np.diff(im, axis=1)), np.abs(np.diff(im, axis=0))
        rows.append((float(im.mean()), float(im.std()), float((gx > 0.1).mean() + (gy > 0.1).mean()) / 2,
                     float((im < 0.25).mean())))
    arr = np.array(rows, dtype=np.float64)
    return {f: arr[:, i] for i, f in enumerate(IMAGE_FEATURES)}


def pca_embedding_features(ref_emb: np.ndarray, cur_emb: np.ndarray, k: int = 5):
    """Embedding-space drift: project both sides onto the reference's top-k principal axes and test each."""
    mu = ref_emb.mean(0)
    _, _, vt = np.linalg.svd(ref_emb - mu, full_matrices=False)
    axes = vt[:k]
    r, c = (ref_emb - mu) @ axes.T, (cur_emb - mu) @ axes.T
    return ({f"emb_pc{i + 1}": r[:, i] for i in range(axes.shape[0])},
            {f"emb_pc{i + 1}": c[:, i] for i in range(axes.shape[0])})


def vit_embeddings(images, checkpoint: str, batch_size: int = 64) -> np.ndarray:
    """Pooled features of a vit_classify checkpoint (its own normalisation) for each grayscale image."""


    ck = load_checkpoint(_vit_checkpoint(checkpoint))
    if "vit_config.json" not in ck.extra:
        raise DriftInputError(f"{checkpoint} is not a vit_classify checkpoint (no vit_config.json)")
    cfg = ViTConfig.from_dict(_json.loads(ck.extra["vit_config.json"]))
    x = np.stack([np.asarray(im, np.float32) for im in images])[:, None]
    if cfg.channels != 1:
        x = np.repeat(x, cfg.channels, axis=1)
    if x.shape[-1] != cfg.image_size:
        x = resize(x, cfg.image_size)
    norm = ck.state.get("normalize") or {}
    if norm:
        x = normalize(x, norm["mean"], norm["std"])
    params = to_tensors(ck.weights)
    fwd = TinyJit(lambda t: vit_features(params, cfg, t).realize())
    return apply_batched(fwd, x, batch_size)
