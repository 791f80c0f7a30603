"""Score the PII detectors on the labelled set: per-type precision and recall, span-overlap matching."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from zeropoint.governance.pii import TYPES, detect

LABELLED = Path(__file__).parent / "data" / "pii_labelled.jsonl"


def score(path: Path = LABELLED) -> tuple[dict, list]:
    tp, fp, fn, exact = Counter(), Counter(), Counter(), Counter()
    errors = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        buf = rec["text"].encode("utf-8")
        gold = []
        for e in rec["entities"]:
            s = buf.find(e["value"].encode("utf-8"))
            assert s >= 0, f"label {e} not in text"
            gold.append((e["type"], s, s + len(e["value"].encode("utf-8"))))
        pred = [(d[0], d[1], d[2]) for d in detect(buf)]
        used = set()
        for p in pred:
            hit = next((i for i, g in enumerate(gold) if i not in used and g[0] == p[0] and p[1] < g[2] and g[1] < p[2]), None)
            if hit is None:
                fp[p[0]] += 1
                errors.append(("FP", p[0], buf[p[1]:p[2]].decode(), rec["text"]))
            else:
                used.add(hit)
                tp[p[0]] += 1
                exact[p[0]] += gold[hit] == p
        for i, g in enumerate(gold):
            if i not in used:
                fn[g[0]] += 1
                errors.append(("FN", g[0], buf[g[1]:g[2]].decode(), rec["text"]))
    out = {}
    for t in TYPES:
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else 1.0
        r = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else 1.0
        out[t] = {"tp": tp[t], "fp": fp[t], "fn": fn[t], "precision": round(p, 4), "recall": round(r, 4),
                  "exact_span": exact[t]}
    return out, errors


if __name__ == "__main__":
    res, errs = score()
    for t, v in res.items():
        print(f"{t:16s} P={v['precision']:.3f} R={v['recall']:.3f}  tp={v['tp']} fp={v['fp']} fn={v['fn']} "
              f"exact-span={v['exact_span']}/{v['tp']}")
    for e in errs:
        print(*e, sep=" | ")
