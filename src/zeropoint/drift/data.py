"""`zpctl drift data`: is the current data distributed like the reference? Text corpora or images.

Text: per-document features (length, words, word length, out-of-vocabulary rate, character mix, type/token
ratio) and the corpus token-frequency profile (top reference words + other, one categorical feature tested
with Jensen-Shannon). The OOV vocabulary is built from half of the reference documents and only the other half
is measured on the reference side, so the reference's own OOV rate is not zero by construction.
Images: brightness, contrast, edge density, dark-pixel share; optional embedding features (PCA of the
reference embeddings) when embeddings are supplied.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from ..hashing import sha256_json
from ..workspace import atomic_write_text, workspace
from . import features as F
from . import plots
from .stats import DRIFT_SHARE, FeatureDrift, dataset_drift, feature_drift, jensen_shannon_dist, psi_level


def random_halves(items: list, seed: int = 0) -> tuple[list, list]:
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    h = len(idx) // 2
    return [items[i] for i in sorted(idx[:h])], [items[i] for i in sorted(idx[h:])]


def text_drift(ref_docs: list[str], cur_docs: list[str], top_k: int = 200) -> tuple[list[FeatureDrift], dict]:
    vocab_docs, measured_ref = ref_docs[0::2], ref_docs[1::2]
    vocab = F.vocabulary(vocab_docs)
    ref_f = F.text_features(measured_ref, vocab)
    cur_f = F.text_features(cur_docs, vocab)
    results = [feature_drift(name, ref_f[name], cur_f[name]) for name in F.TEXT_FEATURES]
    # corpus token-frequency profile: one categorical feature over the reference's top words
    top = F.top_words(ref_docs, top_k)
    rp, cp = F.token_profile(ref_docs, top), F.token_profile(cur_docs, top)
    js = jensen_shannon_dist(rp, cp)
    rn, cn = rp / rp.sum(), cp / cp.sum()
    rn, cn = np.where(rn == 0, 1e-4, rn), np.where(cn == 0, 1e-4, cn)
    ps = float(np.sum((rn - cn) * np.log(rn / cn)))
    results.append(FeatureDrift("token_frequency", "categorical", "jensen_shannon", js, 0.1, js >= 0.1, ps,
                                psi_level(ps), int(rp.sum()), int(cp.sum())))
    return results, {"ref": ref_f, "cur": cur_f, "top_words": top, "ref_profile": rp, "cur_profile": cp}


def image_drift(ref_imgs, cur_imgs, ref_emb=None, cur_emb=None) -> tuple[list[FeatureDrift], dict]:
    ref_f, cur_f = F.image_features(ref_imgs), F.image_features(cur_imgs)
    if ref_emb is not None and cur_emb is not None:
        re_, ce_ = F.pca_embedding_features(np.asarray(ref_emb), np.asarray(cur_emb))
        ref_f.update(re_)
        cur_f.update(ce_)
    return [feature_drift(n, ref_f[n], cur_f[n]) for n in ref_f], {"ref": ref_f, "cur": cur_f}


def run_data_drift(reference: str, current: str | None, *, kind: str = "auto", halves_seed: int | None = None,
                   max_items: int | None = None, drift_share: float = DRIFT_SHARE, out_dir: Path | None = None,
                   embed_model: str | None = None) -> dict:
    """Compare two corpora (or two random halves of `reference` when current is None and halves_seed is set);
    writes report.json + PNG histograms under `evals/drift-data-<ts>/` and returns the report."""
    if kind == "auto":
        p = Path(reference)
        kind = "image" if (p.is_file() and ("idx" in p.name or p.suffix == ".gz")) or \
            (p.is_dir() and any(q.suffix.lower() in F.IMAGE_SUFFIXES for q in p.rglob("*"))
             and not any(p.rglob("*.txt"))) else "text"
    load = F.load_texts if kind == "text" else F.load_images
    t0 = time.time()
    ref = list(load(reference))
    if current is None:
        if halves_seed is None:
            raise F.DriftInputError("give --current, or --halves SEED to compare two random halves of --reference")
        ref, cur = random_halves(ref, halves_seed)
    else:
        cur = list(load(current))
    if max_items:
        ref = random_halves(ref, 1)[0][:max_items] if len(ref) > max_items else ref
        cur = random_halves(cur, 2)[0][:max_items] if len(cur) > max_items else cur
    if kind == "text":
        results, extra = text_drift(ref, cur)
    elif embed_model:   # embedding-space features: PCA axes of the reference's ViT features
        results, extra = image_drift(ref, cur, F.vit_embeddings(ref, embed_model), F.vit_embeddings(cur, embed_model))
    else:
        results, extra = image_drift(ref, cur)
    summary = dataset_drift(results, drift_share)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_dir = Path(out_dir) if out_dir else workspace().evals / f"drift-data-{stamp}-{sha256_json([reference, current, halves_seed])[:6]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = [str(plots.feature_histograms(extra["ref"], extra["cur"], results, out_dir / "features.png",
                                         f"{kind} drift: {Path(reference).name} vs "
                                         f"{Path(current).name if current else 'random half'}"))]
    if kind == "text":
        pngs.append(str(plots.profile_bars(extra["top_words"], extra["ref_profile"], extra["cur_profile"],
                                           out_dir / "token_frequency.png", "top reference words")))
    report = {"kind": kind, "embed_model": embed_model, "reference": str(reference), "current": str(current) if current else None,
              "halves_seed": halves_seed, "n_reference": len(ref), "n_current": len(cur),
              "method": "Evidently default test selection (KS p<0.05 for <=1000 reference rows, else normalised "
                        "Wasserstein >= 0.1; categorical: chi-square / Z-test, else Jensen-Shannon >= 0.1); "
                        "PSI 0.1 moderate / 0.25 significant",
              "features": [r.to_dict() for r in results], **summary, "plots": pngs,
              "wall_s": round(time.time() - t0, 3), "report_dir": str(out_dir)}
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report
