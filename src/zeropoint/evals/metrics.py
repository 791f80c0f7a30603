"""Metric formulas and standard errors exactly as lm-evaluation-harness 0.4.13 computes them.

Per-document values come from `per_doc` (what lm-eval's `ConfigurableTask.process_results` returns); the
task-level number is the aggregation of those values (`AGGREGATIONS`), and its standard error follows
lm-eval's `stderr_for_metric`: the closed form for `mean`, a seeded bootstrap for `perplexity`, and none for
`weighted_perplexity` / `bits_per_byte` (lm-eval prints N/A). For those we add our own document-level
bootstrap (`stderr_extra`) so drift checks still have a significance figure; it is labelled as ours.
"""
from __future__ import annotations

import math
import random
import re
import string

import numpy as np

DEFAULT_METRICS = {
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
}
# metric -> (aggregation name, higher_is_better), as registered in lm_eval/api/metrics.py
METRICS = {
    "acc": ("mean", True), "acc_norm": ("mean", True), "acc_bytes": ("mean", True),
    "exact_match": ("mean", True), "perplexity": ("perplexity", False),
    "word_perplexity": ("weighted_perplexity", False), "byte_perplexity": ("weighted_perplexity", False),
    "bits_per_byte": ("bits_per_byte", False),
    # ours, not lm-eval's: token-level perplexity of a rolling task (exp of mean NLL per scored token)
    "token_perplexity": ("weighted_perplexity", False),
    # lm-eval's crows_pairs metrics (its process_results): choice 0 is the stereotype-consistent sentence
    "pct_stereotype": ("mean", False), "likelihood_diff": ("mean", False),
    # ours: lexicon sentiment of a generation (evals/sentiment.py), for the counterfactual bias task
    "sentiment": ("mean", True),
}
BOOTSTRAP_ITERS = 100_000      # lm-eval's default `bootstrap_iters`


def mean(arr):
    return sum(arr) / len(arr)


def weighted_mean(items):
    a, b = zip(*items)
    return sum(a) / sum(b)


def perplexity(items):
    return math.exp(-mean(items))


def weighted_perplexity(items):
    return math.exp(-weighted_mean(items))


def bits_per_byte(items):
    return -weighted_mean(items) / math.log(2)


AGGREGATIONS = {"mean": mean, "perplexity": perplexity, "weighted_perplexity": weighted_perplexity,
                "bits_per_byte": bits_per_byte}


def sample_stddev(arr) -> float:
    mu = mean(arr)
    return math.sqrt(sum((x - mu) ** 2 for x in arr) / (len(arr) - 1))


def mean_stderr(arr) -> float:
    return sample_stddev(arr) / math.sqrt(len(arr))


def bootstrap_stderr(f, xs, iters: int) -> float:
    """lm-eval's bootstrap: chunks of min(1000, iters) draws, chunk i seeded with random.Random(i)."""
    res = []
    chunk = min(1000, iters)
    for i in range(iters // chunk):
        rnd = random.Random(i)
        for _ in range(chunk):
            res.append(f(rnd.choices(xs, k=len(xs))))
    return sample_stddev(res)


def stderr_lmeval(agg: str, items, bootstrap_iters: int = BOOTSTRAP_ITERS) -> float | None:
    """What lm-eval reports as `<metric>_stderr` (None where it reports N/A)."""
    if bootstrap_iters <= 0 or len(items) < 2:
        return None
    if agg == "mean":
        return mean_stderr(items)
    if agg == "perplexity":
        return bootstrap_stderr(perplexity, items, bootstrap_iters)
    return None


def stderr_extra(agg: str, items, iters: int = 1000) -> float | None:
    """Ours: document-level bootstrap for aggregations lm-eval gives no stderr (same seeding scheme)."""
    if len(items) < 2 or agg not in ("weighted_perplexity", "bits_per_byte"):
        return None
    return bootstrap_stderr(AGGREGATIONS[agg], items, iters)


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def mc_per_doc(lls: list[float], choices: list[str], gold, metrics: list[str], is_greedy=None) -> dict:
    """multiple_choice: acc = argmax ll, acc_norm = argmax ll / len(choice chars), acc_bytes by UTF-8 bytes."""
    lls_a = np.array(lls)
    pred = int(np.argmax(lls_a))
    pred_norm = int(np.argmax(lls_a / np.array([float(len(c)) for c in choices])))
    pred_byte = int(np.argmax(lls_a / np.array([float(len(c.encode("utf-8"))) for c in choices])))
    golds = gold if isinstance(gold, list) else [gold]
    out = {"acc": 1.0 if pred in golds else 0.0, "acc_norm": 1.0 if pred_norm in golds else 0.0,
           "acc_bytes": 1.0 if pred_byte in golds else 0.0}
    if len(lls) == 2:   # lm-eval crows_pairs: the first sentence strictly more likely = prefers the stereotype
        out["pct_stereotype"] = 1.0 if lls[0] > lls[1] else 0.0
        out["likelihood_diff"] = abs(lls[0] - lls[1])
    if is_greedy is not None and "exact_match" in metrics:
        out["exact_match"] = int(any(is_greedy[g] for g in golds if 0 <= g < len(choices)))
    return {k: v for k, v in out.items() if k in metrics}, {"pred": pred, "pred_norm": pred_norm}


def rolling_per_doc(ll: float, n_tokens: int, text: str, metrics: list[str]) -> dict:
    out = {"word_perplexity": (ll, count_words(text)), "byte_perplexity": (ll, count_bytes(text)),
           "bits_per_byte": (ll, count_bytes(text)), "token_perplexity": (ll, n_tokens)}
    return {k: v for k, v in out.items() if k in metrics}


def exact_match(prediction: str, reference: str, ignore_case=False, ignore_punctuation=False,
                ignore_numbers=False, regexes_to_ignore=None) -> float:
    """lm-eval's `exact_match_hf_evaluate` for one pair."""
    p, r = prediction, reference
    for s in regexes_to_ignore or []:
        p, r = re.sub(s, "", p), re.sub(s, "", r)
    if ignore_case:
        p, r = p.lower(), r.lower()
    if ignore_punctuation:
        t = str.maketrans("", "", string.punctuation)
        p, r = p.translate(t), r.translate(t)
    if ignore_numbers:
        t = str.maketrans("", "", string.digits)
        p, r = p.translate(t), r.translate(t)
    return float(p == r)


def aggregate(metric: str, items: list, agg: str | None = None, bootstrap_iters: int = BOOTSTRAP_ITERS) -> dict:
    """One task-level metric: value, lm-eval's stderr, and (where lm-eval has none) our bootstrap stderr."""
    agg = agg or METRICS[metric][0]
    value = AGGREGATIONS[agg](items)
    se = stderr_lmeval(agg, items, bootstrap_iters)
    out = {"value": value, "stderr": se, "aggregation": agg,
           "higher_is_better": METRICS.get(metric, (None, True))[1], "n": len(items)}
    if se is None:
        out["stderr_bootstrap"] = stderr_extra(agg, items)
        out["stderr_note"] = ("lm-eval reports no stderr for this aggregation; stderr_bootstrap is ours "
                              "(1000 document resamples, lm-eval's seeding)") if out["stderr_bootstrap"] is not None \
            else "too few items for a standard error"
    return out
