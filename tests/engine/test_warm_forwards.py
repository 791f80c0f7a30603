"""Warm start of the compiled forwards that are not training steps: KV-cache generation and eval scoring.

A second model object (same config, same weights, its own buffers) stands in for a second process: its decoder and
scorer must replay the stored captures (nothing of the first object is reachable from the files) and produce the
same tokens and the same log-likelihoods bit for bit. The cross-process proof is test_warm_start.py."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny import random_llama  # noqa: E402
from zeropoint.engine import jitcache  # noqa: E402
from zeropoint.evals.scoring import LMScorer  # noqa: E402
from zeropoint.models.generate import generate  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE", str(tmp_path / "cache"))
    jitcache.STATS["jit"].clear()
    return tmp_path / "cache"


class Bytes:
    bos_id, eos_id = 256, 257

    def encode(self, text, add_bos=False):
        return ([256] if add_bos else []) + list(text.encode())

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")

    def stop_ids(self):
        return []


def _sources(prefix):
    return {k: v["source"] for k, v in jitcache.STATS["jit"].items() if k.startswith(prefix)}


def test_generation_and_scoring_replay_from_the_cache(cache):
    prompt = [256, 72, 101, 108, 108, 111]
    reqs = [([256, 65, 66, 67], [68]), ([256, 65, 66], [67, 68]), ([256, 88], [89, 90, 91])]
    first = random_llama("tiny-untied", seed=3)
    out1 = generate(first, Bytes(), prompt, max_tokens=6, stop_ids=[]).ids
    scorer1 = LMScorer(first, Bytes(), max_length=64, batch_size=4)
    sc1 = scorer1.loglikelihood_tokens(reqs)
    assert set(_sources("generate").values()) == {"compiled"} and set(_sources("score").values()) == {"compiled"}
    entries = {d.name.split("-")[0] for d in (cache / "jit").iterdir()}
    assert {"generate.decode", "generate.prefill32"} <= entries and any(e.startswith("score.") for e in entries)

    jitcache.STATS["jit"].clear()
    second = random_llama("tiny-untied", seed=3)   # same weights, new buffers
    out2 = generate(second, Bytes(), prompt, max_tokens=6, stop_ids=[]).ids
    scorer2 = LMScorer(second, Bytes(), max_length=64, batch_size=4)
    sc2 = scorer2.loglikelihood_tokens(reqs)
    assert set(_sources("generate").values()) == {"cache"} and set(_sources("score").values()) == {"cache"}
    assert out2 == out1 and sc2 == sc1
    ws = jitcache.summary()      # what an eval's results.json records as warm_start
    assert ws["warm"] and ws["steps_compiled"] == 0 and ws["steps_loaded"] == len(jitcache.STATS["jit"]) >= 2
    assert 0 < scorer2.stats["first_batch_s"] and 0 < scorer1.stats["first_batch_s"]

    jitcache.STATS["jit"].clear()
    other = random_llama("tiny-untied", seed=4)    # other weights through the same stored kernels
    assert generate(other, Bytes(), prompt, max_tokens=6, stop_ids=[]).ids != out1 or \
        LMScorer(other, Bytes(), max_length=64, batch_size=4).loglikelihood_tokens(reqs) != sc1
    assert set(_sources("generate").values()) == {"cache"}
