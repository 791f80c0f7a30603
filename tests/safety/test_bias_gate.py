"""The bias gate's rule on real finetunes of a tiny model, and on hand-made outcomes.

A planted shift: two full finetunes of the same random one-layer tiny Llama with the project's training engine,
of the same length (steps, batch shape, sentences per batch), one on a text skewed toward one side of the pairs
(only the stereotype-consistent sentences), one on unskewed text (both sentences of every pair). Scored through
the eval harness on the same pairs as the untouched base model, the gate must fail the first and pass the second.
(The harness's log-likelihoods are checked against brute force in tests/evals/test_scoring.py and against a hand
computation in tests/evals/test_bias.py; one layer halves the compile time, which dominates this test.)
The pairs are the shipped pack's gender pairs whose terms have the same length (my mother / my father), so the
random model's own preference is not decided by term length.
"""
import json

import numpy as np
import pytest

from tests.evals.helpers import ByteTokenizer
from zeropoint.errors import ZeropointError
from zeropoint.safety.bias_gate import evaluate_pairs, evaluate_sentiment

STEPS, LR, T, B = 60, 1e-2, 72, 8


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """{base, skewed, unskewed}: bias_pairs sample records of each model on the same 16 pairs."""
    import os

    from tests.models.tiny import random_llama
    from zeropoint.engine.trainer import EngineConfig, Trainer
    from zeropoint.evals.bias import load_pairs, pack_groups, pair_doc, write_task
    from zeropoint.evals.harness import eval_dir, run_eval
    from zeropoint.models.llama import get_config, state_dict
    old = os.environ.get("ZP_HOME")
    os.environ["ZP_HOME"] = str(tmp_path_factory.mktemp("zphome"))
    try:
        tok = ByteTokenizer()
        cfg = get_config("tiny-untied", n_layers=1)
        pairs = [p for p in load_pairs("gender") if p.term_a == "my mother"]
        assert len(pairs) == 16 and all(len(p.term_a) == len(p.term_b) for p in pairs)
        task = str(write_task("bias_pairs", "bias_pairs-mother-father", [pair_doc(p, pack_groups("gender")) for p in pairs]))

        def batches(sentences):
            rng = np.random.default_rng(0)
            for _ in range(STEPS):
                x, y = np.zeros((B, T), np.int32), np.full((B, T), -1, np.int32)
                for i, j in enumerate(rng.integers(0, len(sentences), B)):
                    ids = [tok.bos_id] + tok.encode(sentences[j])
                    x[i, :len(ids) - 1], y[i, :len(ids) - 1] = ids[:-1], ids[1:]
                yield x, y

        def finetune(sentences):
            m = random_llama(cfg, 0)
            tr = Trainer(dict(state_dict(m)), lambda x, y: m(x).sparse_categorical_crossentropy(y, ignore_index=-1),
                         EngineConfig(lr=LR, total_steps=STEPS, warmup_steps=2, min_lr_ratio=1.0))
            losses = [tr.step([xy]).loss for xy in batches(sentences)]
            assert losses[-1] < losses[0] - 2.0      # it learned the text
            return m

        skewed = [p.sent_more for p in pairs] * 2                        # only the stereotype-consistent side
        unskewed = [p.sent_more for p in pairs] + [p.sent_less for p in pairs]
        assert len(skewed) == len(unskewed)
        models = {"base": random_llama(cfg, 0), "skewed": finetune(skewed), "unskewed": finetune(unskewed)}
        out = {}
        for name, m in models.items():
            res = run_eval(name, [task], model=m, tokenizer=tok, max_length=128, batch_size=32, bootstrap_iters=0)
            tr = res["tasks"]["bias_pairs-mother-father"]
            out[name] = [json.loads(x) for x in (eval_dir(res["eval_id"]) / tr["samples_file"]).read_text().splitlines()]
        yield out
    finally:
        if old is None:
            os.environ.pop("ZP_HOME", None)
        else:
            os.environ["ZP_HOME"] = old


@pytest.mark.slow
def test_gate_fails_on_a_finetune_skewed_toward_the_stereotype(scored):
    v = evaluate_pairs(scored["skewed"], scored["base"])
    row = v["categories"][0]
    assert v["passed"] is False and row["verdict"] == "FAIL" and v["failed_categories"] == ["gender"]
    assert row["score"] > row["baseline"] and row["increase_ci"][0] > 0
    assert "rose by" in row["why"]


@pytest.mark.slow
def test_gate_passes_a_finetune_of_the_same_length_on_unskewed_text(scored):
    v = evaluate_pairs(scored["unskewed"], scored["base"])
    row = v["categories"][0]
    assert v["passed"] is True and row["verdict"] == "PASS", row
    assert row["increase_ci"][0] <= 0 <= row["increase_ci"][1]
    # the base model compared with itself: no change, a degenerate interval, a pass
    same = evaluate_pairs(scored["base"], scored["base"])["categories"][0]
    assert same["increase"] == 0 and same["increase_ci"] == [0.0, 0.0] and same["verdict"] == "PASS"


# ---- the rule on hand-made outcomes -----------------------------------------------------------------------------------
def _samples(prefs: dict[str, list[int]], per_template: int = 2) -> list[dict]:
    out = []
    for cat, vals in prefs.items():
        for i, v in enumerate(vals):
            out.append({"doc_id": len(out), "id": f"{cat}.{i}", "category": cat, "template": f"{cat}.t{i // per_template}",
                        "pct_stereotype": float(v)})
    return out


def test_rule_relative_familywise_and_absolute():
    base = _samples({"gender": [0, 1] * 20, "age": [0, 1] * 20})
    up = _samples({"gender": [1, 1] * 20, "age": [0, 1] * 20})      # gender 50% -> 100%, age unchanged
    v = evaluate_pairs(up, base)
    by = {r["category"]: r for r in v["categories"]}
    assert by["gender"]["verdict"] == "FAIL" and by["age"]["verdict"] == "PASS"
    assert by["gender"]["increase"] == 0.5 and by["gender"]["increase_level"] == pytest.approx(0.975)   # Bonferroni, 2
    # a tolerance above the whole interval passes it; an absolute threshold below the score fails it anyway
    assert evaluate_pairs(up, base, max_increase=0.6)["passed"] is True
    v = evaluate_pairs(base, base, thresholds={"age": 0.4})
    assert v["failed_categories"] == ["age"] and "0.500 > absolute threshold 0.4" in v["categories"][1]["why"]
    with pytest.raises(ZeropointError, match="not scored"):
        evaluate_pairs(base, base, thresholds={"religion": 0.6})
    with pytest.raises(ZeropointError, match="different bias pairs"):
        evaluate_pairs(_samples({"gender": [1] * 4}), base)
    with pytest.raises(ZeropointError, match="not bias_pairs samples"):
        evaluate_pairs([{"doc_id": 0, "acc": 1.0}], base)


def test_sentiment_gap_rule():
    def rows(gaps):   # one frame per entry: group a scores 0, group b scores `gap`
        return [{"doc_id": 0, "category": "religion", "frame": f"f{i}", "group": g, "sentiment": s}
                for i, gap in enumerate(gaps) for g, s in (("a", 0.0), ("b", gap))]
    base, wider = rows([0.1] * 12), rows([0.6] * 12)
    v = evaluate_sentiment(wider, base, max_gap_increase=0.1)
    r = v["categories"][0]
    assert v["passed"] is False and r["gap"] == pytest.approx(0.6) and r["increase"] == pytest.approx(0.5)
    assert evaluate_sentiment(wider, base, max_gap_increase=None)["categories"][0]["verdict"] == "REPORTED"
    assert evaluate_sentiment(base, wider, max_gap_increase=0.0)["passed"] is True
