"""The bias probe pack (data, references, harness scoring) and the sentiment scorer.

The CrowS-style score is checked against a hand computation: a unigram byte model whose log-probabilities are
written in the test (every byte has logit 0 except `s`, which has ln 2), so each sentence's log-likelihood is
(number of `s`) * ln 2 - (length + 0) * ln Z and the four pairs' verdicts and differences follow on paper.
"""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.evals.helpers import ByteTokenizer
from zeropoint.errors import ConfigError
from zeropoint.evals import bias as B
from zeropoint.evals.breakdown import cluster_ci
from zeropoint.evals.harness import eval_dir, run_eval
from zeropoint.evals.sentiment import LEXICON_SHA256, scorer_info, sentiment


# ---- the pack -----------------------------------------------------------------------------------------------------
def test_pack_has_several_hundred_balanced_minimal_pairs_in_every_category():
    total = 0
    for cat in B.CATEGORIES:
        pairs = B.load_pairs(cat)
        total += len(pairs)
        assert len(pairs) >= 50, cat
        # both sides of every category are stereotype-consistent equally often (a term prior cancels)
        assert sum(p.stereotype == "a" for p in pairs) * 2 == len(pairs), cat
        for p in pairs:
            assert not B.lint_sentence(p.sent_a) and not B.lint_sentence(p.sent_b), p.id
            # a minimal pair: the same words around the swapped group term
            cut_a = re.subn(rf"\b{re.escape(p.term_a.lower())}\b", "#", p.sent_a.lower())
            cut_b = re.subn(rf"\b{re.escape(p.term_b.lower())}\b", "#", p.sent_b.lower())
            assert cut_a[0] == cut_b[0] and cut_a[1] == cut_b[1] == 1, p.id
        assert len({p.id for p in pairs}) == len(pairs)
    assert total == 436
    prompts = B.load_prompts()
    assert len(prompts) == 168 and {p.category for p in prompts} == set(B.CATEGORIES) - {"occupation_gender"}


def test_pack_states_its_license_and_its_review():
    lic = (B.PACK_DIR / "LICENSE").read_text()
    assert "CC0 1.0 Universal" in lic
    readme = (B.PACK_DIR / "README.md").read_text()
    assert "CC0-1.0" in readme and "## Review" in readme
    for f in [*B.PAIRS_DIR.glob("*.yaml"), B.PROMPTS_FILE]:
        assert "CC0-1.0" in "".join(f.read_text().splitlines(True)[:3]), f.name


def test_lint_catches_what_the_review_fixed():
    assert B.lint_sentence("the man was an tall man") == ["does not start with a capital letter",
                                                          "does not end with exactly one full stop",
                                                          "'an tall' should be 'a tall'"]
    assert B.lint_sentence("He ate a apple.") == ["'a apple' should be 'an apple'"]
    assert B.lint_sentence("It took an hour.") == []


def test_bad_pack_and_bad_references_are_named(tmp_path):
    bad = tmp_path / "gender.yaml"
    bad.write_text(yaml.safe_dump({"category": "gender", "term_sets": {"t": [["she", "he"]]},
                                   "templates": [{"id": "x", "stereotype": "c", "text": "{X} ran."}]}))
    with pytest.raises(ConfigError, match="stereotype must be 'a' or 'b'"):
        B.load_pairs("gender", bad)
    bad.write_text(yaml.safe_dump({"category": "gender", "term_sets": {"t": [["she", "he"]]},
                                   "templates": [{"id": "x", "stereotype": "a", "text": "{X} met {y}."}]}))
    with pytest.raises(ConfigError, match=r"unknown slot \{y\}"):
        B.load_pairs("gender", bad)
    for ref, msg in (("bias_pairs:nope", "unknown categories"), ("bias_pairs:gender:0", "positive integer"),
                     ("bias_pairs:a:b:c", "bad bias task")):
        with pytest.raises(ConfigError, match=msg):
            B.parse_ref(ref)
    with pytest.raises(ConfigError, match="no prompts for"):
        B.build_task("bias_sentiment:occupation_gender")


def test_task_reference_interleaves_categories_and_caps_per_category():
    docs = B.pair_docs(None, 2)
    assert [d["category"] for d in docs[:7]] == list(B.CATEGORIES)     # --limit 7 takes one of each
    assert len(docs) == 14 and {d["stereotype_side"] for d in docs[:7]} == {"a"}
    assert {d["stereotype_side"] for d in docs[7:]} == {"b"}           # the second pair of each: the other side
    yml = B.build_task("bias_pairs:gender,age:3")
    cfg = yaml.safe_load(yml.read_text())
    assert cfg["task"] == "bias_pairs-gender-age-n3" and cfg["breakdown"]["cluster"] == "template"
    rows = [json.loads(line) for line in Path(cfg["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["choices"][0] == rows[0]["choices"][0].strip()
    assert B.build_task("bias_pairs:gender,age:3") == yml                 # same pack -> same files


# ---- scoring through the harness ----------------------------------------------------------------------------------
class UnigramByteLM:
    """p(next byte) does not depend on the context: logit ln 2 for `s`, 0 for every other of the 258 ids."""
    V = 258

    def __init__(self):
        from tinygrad import Tensor
        w = np.zeros(self.V, np.float32)
        w[ord("s")] = math.log(2)
        self.w = Tensor(w)

    def __call__(self, toks, start_pos=0):
        return (toks.unsqueeze(-1).float() * 0.0) + self.w.reshape(1, 1, self.V)


HAND_PAIRS = [   # (category, stereotype-consistent sentence, the other one): equal lengths, so only `s` counts
    ("c1", "sad cat.", "mad cat."),      # more `s` in the stereotype-consistent one: prefers it (1)
    ("c1", "bad dog.", "sad dog."),      # fewer: does not (0)
    ("c2", "his cat.", "her cat."),      # one more `s`: 1
    ("c2", "ss.", "tt."),                # two more: 1
]


def test_crows_score_reproduces_a_hand_computation_on_four_pairs():
    docs = [{"id": f"p{i}", "category": c, "template": f"t{i}", "stereotype_side": "a", "choices": [m, l]}
            for i, (c, m, l) in enumerate(HAND_PAIRS)]
    yml = B.write_task("bias_pairs", "bias_pairs-hand", docs, "hand-made")
    res = run_eval("unigram", [str(yml)], model=UnigramByteLM(), tokenizer=ByteTokenizer(), max_length=32,
                   batch_size=4, bootstrap_iters=0)
    m = res["tasks"]["bias_pairs-hand"]["metrics"]
    # by hand: verdicts 1, 0, 1, 1 -> 3/4; |differences| ln2, ln2, ln2, 2 ln2 -> mean 5/4 ln2
    assert m["pct_stereotype"]["value"] == 0.75
    assert m["likelihood_diff"]["value"] == pytest.approx(1.25 * math.log(2), abs=1e-5)
    groups = m["pct_stereotype"]["breakdown"]["groups"]
    assert groups["c1"]["value"] == 0.5 and groups["c2"]["value"] == 1.0 and groups["c2"]["n"] == 2
    # each sentence's log-likelihood, given the BOS prefix: n_s ln 2 - len ln 259
    lnz = math.log(257 + math.exp(math.log(2)))
    samples = [json.loads(x) for x in (eval_dir(res["eval_id"]) / "samples_bias_pairs-hand.jsonl").read_text().splitlines()]
    for s, (_, more, less) in zip(samples, HAND_PAIRS):
        want = [t.count("s") * math.log(2) - len(t) * lnz for t in (more, less)]
        assert s["loglikelihoods"] == pytest.approx(want, abs=1e-4)
        assert s["category"] in ("c1", "c2") and s["id"].startswith("p")


def test_a_pair_metric_on_a_task_with_more_choices_is_an_error(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"choices": ["a.", "b.", "c."]}) + "\n")
    yml = tmp_path / "t.yaml"
    yml.write_text(f"task: three\ndataset_path: json\ndata_files: {{test: {data}}}\ntest_split: test\n"
                   "output_type: multiple_choice\ndoc_to_text: ''\ndoc_to_choice: choices\ndoc_to_target: 0\n"
                   "metric_list: [{metric: pct_stereotype}]\n")
    with pytest.raises(Exception, match="need exactly two choices"):
        run_eval("unigram", [str(yml)], model=UnigramByteLM(), tokenizer=ByteTokenizer(), max_length=32, batch_size=4)


# ---- statistics and the sentiment scorer ----------------------------------------------------------------------------
def test_cluster_bootstrap_resamples_clusters_not_items():
    # two clusters of 50 identical items: the interval spans both cluster means, not the narrow item-level one
    vals, cl = [0.0] * 50 + [1.0] * 50, ["a"] * 50 + ["b"] * 50
    lo, hi = cluster_ci(vals, cl, n_boot=2000, seed=0)
    assert (lo, hi) == (0.0, 1.0)
    lo_i, hi_i = cluster_ci(vals, list(range(100)), n_boot=2000, seed=0)
    assert 0.35 < lo_i < 0.45 and 0.55 < hi_i < 0.65
    assert cluster_ci(vals, cl, seed=0) == cluster_ci(vals, cl, seed=0)


def test_sentiment_is_the_pinned_vader_lexicon_with_group_words_masked():
    info = scorer_info()
    assert info["lexicon_sha256"] == LEXICON_SHA256 and info["license"] == "MIT"
    assert sentiment("a kind and generous person") > 0.5 > -0.5 > sentiment("a cruel, lazy thief")
    assert sentiment("blind") < 0 and sentiment("blind", ["blind"]) == 0.0     # 'blind' is rated -1.7
    assert sentiment("the non-disabled man", ["disabled", "non-disabled"]) == 0.0
    assert B.mask_words(["my blind neighbor", "my deaf neighbor"]) == ["blind", "deaf"]
    assert re.fullmatch(r"[0-9a-f]{64}", LEXICON_SHA256)


class SilentLM(UnigramByteLM):
    """Always predicts EOS (id 257): every continuation is empty, so every sentiment is 0 and every gap 0."""

    def __init__(self):
        from tinygrad import Tensor
        w = np.zeros(self.V, np.float32)
        w[257] = 10.0
        self.w = Tensor(w)


def test_sentiment_task_runs_through_the_harness_with_gaps_per_category():
    docs = B.prompt_docs(["gender", "age"], 1)            # one frame: 2 + 3 group terms
    assert [d["group"] for d in docs] == ["my female neighbor", "my male neighbor", "my young neighbor",
                                          "my middle-aged neighbor", "my elderly neighbor"]
    assert docs[0]["mask_words"] == ["female", "male"]
    yml = B.write_task("bias_sentiment", "bias_sentiment-plumbing", docs, "gender, age")
    res = run_eval("silent", [str(yml)], model=SilentLM(), tokenizer=ByteTokenizer(), max_length=64, batch_size=4)
    m = res["tasks"]["bias_sentiment-plumbing"]["metrics"]
    assert m["sentiment"]["value"] == 0.0 and m["sentiment"]["scorer"]["lexicon_sha256"] == LEXICON_SHA256
    gaps = m["sentiment_gap"]["breakdown"]["groups"]
    assert set(gaps) == {"gender", "age"} and gaps["age"]["clusters"] == 1 and gaps["gender"]["value"] == 0.0
    assert set(gaps["age"]["variants"]) == {"my elderly neighbor", "my middle-aged neighbor", "my young neighbor"}
    samples = [json.loads(x) for x in (eval_dir(res["eval_id"]) / "samples_bias_sentiment-plumbing.jsonl").read_text().splitlines()]
    assert [s["generation"] for s in samples] == [""] * 5 and samples[0]["frame"] == "gender.known_for"
