"""Measure prefix sharing in the eval scorer: MMLU dev (zero-shot, letter answers) scored with requests that
share a model input run once (default) vs once per choice. Prints wall time, forward passes and whether the
log-likelihoods agree. Usage: PYTHONPATH=src python bench/eval_prefix_sharing.py [--docs 8] [--model smollm2-135m]
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    from zeropoint.evals.scoring import LMScorer
    from zeropoint.evals.tasks import load_task
    from zeropoint.models.registry import load_model
    model, _, tok = load_model(a.model)
    task = load_task("mmlu_dev")
    docs = task.docs[:a.docs]
    pairs = [(c, " " + ch) for c, d in zip(task.contexts(docs), docs) for ch in task.choices(d)]
    out = {}
    for share in (True, False):
        sc = LMScorer(model, tok, batch_size=a.batch_size, share_prefix=share)
        sc.loglikelihood(pairs[:a.batch_size])            # warm-up: compile/capture outside the timing
        sc.stats.update(forward_passes=0, batches=0, tokens_forwarded=0, tokens_padded=0)
        t0 = time.perf_counter()
        res = sc.loglikelihood(pairs)
        out["shared" if share else "per_choice"] = {"wall_s": round(time.perf_counter() - t0, 2),
                                                    **{k: sc.stats[k] for k in ("forward_passes", "batches", "tokens_forwarded", "tokens_padded")},
                                                    "lls": [r[0] for r in res]}
    diff = max(abs(x - y) for x, y in zip(out["shared"]["lls"], out["per_choice"]["lls"]))
    for v in out.values():
        v.pop("lls")
    print(json.dumps({"docs": a.docs, "requests": len(pairs), **out, "max_abs_ll_diff": diff}, indent=2))


if __name__ == "__main__":
    main()
