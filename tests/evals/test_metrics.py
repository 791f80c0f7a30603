import math
import random

import pytest

from zeropoint.evals import metrics as M


def test_acc_norm_divides_by_choice_length_in_characters():
    vals, preds = M.mc_per_doc([-10.0, -12.0], ["a", "bbbbbbbbbbbb"], 1, ["acc", "acc_norm"])
    assert vals == {"acc": 0.0, "acc_norm": 1.0} and preds == {"pred": 0, "pred_norm": 1}


def test_aggregations_and_stderrs_equal_lm_evals_functions():
    lm = pytest.importorskip("lm_eval.api.metrics")
    rnd = random.Random(3)
    acc = [float(rnd.random() < 0.3) for _ in range(50)]
    lls = [-rnd.random() * 5 for _ in range(40)]
    pairs = [(-rnd.random() * 300, rnd.randint(20, 90)) for _ in range(30)]
    assert M.mean(acc) == lm.mean(acc) and M.mean_stderr(acc) == lm.mean_stderr(acc)
    assert M.perplexity(lls) == lm.perplexity(lls)
    assert M.weighted_perplexity(pairs) == lm.weighted_perplexity(pairs)
    assert M.bits_per_byte(pairs) == lm.bits_per_byte(pairs)
    import os
    os.environ["DISABLE_MULTIPROC"] = "1"
    assert M.bootstrap_stderr(M.perplexity, lls, 2000) == lm.bootstrap_stderr(lm.perplexity, lls, 2000)
    agg = M.aggregate("word_perplexity", pairs)
    assert agg["stderr"] is None and agg["stderr_bootstrap"] > 0   # lm-eval: N/A; ours labelled as ours


def test_rolling_counts_words_and_bytes_like_lm_eval():
    out = M.rolling_per_doc(-10.0, 7, "héllo  wörld\nagain", ["word_perplexity", "byte_perplexity", "bits_per_byte"])
    assert out["word_perplexity"] == (-10.0, 3) and out["byte_perplexity"] == (-10.0, 20)
    assert M.bits_per_byte([out["bits_per_byte"]]) == pytest.approx(10 / 20 / math.log(2))


def test_exact_match_options():
    assert M.exact_match("Paris", "paris") == 0.0
    assert M.exact_match("Paris.", "paris", ignore_case=True, ignore_punctuation=True) == 1.0
    assert M.exact_match("The answer is 42", "42", regexes_to_ignore=["The answer is "]) == 1.0
