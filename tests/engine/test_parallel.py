"""Warm start (engine/jitcache.py) meets data parallel (engine/parallel.py): where a step runs is part of its key, so
a step captured for 2 devices, or with partitioned Adam moments, is never replayed for another placement. On a tiny
random Llama trained in full, on 2 virtual CPU devices (`CPU`, `CPU:1`). That a step stored by a one-device run is not
loaded by a 2-device run (and is by the next one-device run) is checked on the recipe runs of
tests/recipes/test_data_parallel.py, which compile those steps anyway."""
import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad.helpers import Context

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.models.tiny import random_llama  # noqa: E402
from zeropoint.engine import EngineConfig, Trainer, device_array, jitcache  # noqa: E402
from zeropoint.models.llama import get_config  # noqa: E402
from zeropoint.models.llm import lm_loss, trainable_params, warm_start_args  # noqa: E402

CFG = get_config("tiny-untied", dim=32, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=64, vocab_size=64,
                 max_seq_len=16)
B, T = 4, 8


def _trainer(devices=1, shard_optimizer=False) -> Trainer:
    model = random_llama(CFG, 0)
    params = trainable_params(model, "full")
    cfg = EngineConfig(lr=3e-4, total_steps=4, devices=devices, shard_optimizer=shard_optimizer)
    return Trainer(params, lm_loss(model), cfg, **warm_start_args(model, params, method="full", lora=None))


def _batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(step)
    return tuple(rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32) for _ in range(2))


def _micro_key(tr: Trainer) -> str:
    x, y = (device_array(a) for a in _batch(0))
    return jitcache._key_sha(tr._micro.full_key((tr.place.batch(x), tr.place.batch(y)), {}))


def test_every_placement_has_its_own_step_key():
    keys = {"one": _micro_key(_trainer(1)), "two": _micro_key(_trainer(2)),
            "two_zero1": _micro_key(_trainer(2, True))}
    # data parallel and ZeRO-1 bind the same tensors (shapes, dtypes, device tuples): only the key tells them apart
    assert len(set(keys.values())) == len(keys), keys
    # the placement is keyed resolved: a count and the same names are one step; ZeRO-1 on one device is no ZeRO-1
    assert _micro_key(_trainer(["CPU", "CPU:1"])) == keys["two"]
    assert _micro_key(_trainer(1, shard_optimizer=True)) == keys["one"]


def test_a_checkpointed_step_splits_across_devices():
    """Activation checkpointing (issue 30) under data parallel: the segmented micro-step builds its causal mask and
    RoPE tables where the weights are (it once made the mask on the default device only, and tinygrad refused to
    mix the two). One micro-step on 1 and on 2 devices: the same loss and accumulated gradient, within rounding."""
    def micro(devices):
        model = random_llama(CFG, 0)
        tr = Trainer(trainable_params(model, "full"), lm_loss(model, "layers"),
                     EngineConfig(total_steps=1, devices=devices))
        x, y = (tr.place.batch(device_array(a)) for a in _batch(0))
        loss = float(tr._micro(x, y).item())
        return loss, [g.numpy() for g in tr.grads]
    with Context(NOOPT=1):   # kernel lowering is the cost here (tests/recipes/test_data_parallel.py says why)
        (l1, g1), (l2, g2) = micro(1), micro(2)
    assert l2 == pytest.approx(l1, rel=1e-6)
    assert max(float(np.abs(a - b).max()) for a, b in zip(g1, g2)) <= 1e-6
    assert any(not np.array_equal(a, b) for a, b in zip(g1, g2))   # really summed on two devices
