"""Activation checkpointing in the engine, on the tiny Llama: the same gradients as the plain step, and less memory.

Gradient equality alone would pass if checkpointing did nothing (tinygrad merges a recomputation with the forward
it repeats), so the same run also measures the step's allocator high-water mark, which must fall."""
import sys
from pathlib import Path

import numpy as np
from tinygrad import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.models.tiny import random_llama  # noqa: E402
from zeropoint.engine import EngineConfig, SegmentedLoss, Trainer  # noqa: E402
from zeropoint.models.llama import get_config, state_dict  # noqa: E402
from zeropoint.models.lora import LoRASpec, apply_lora  # noqa: E402
from zeropoint.perf.memory import AllocatorPeak  # noqa: E402

CFG = get_config("tiny-untied", n_layers=3)
B, T = 4, 64


def _batch(seed):
    rng = np.random.default_rng(seed)
    return (Tensor(rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)),
            Tensor(rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)))


def _grads_and_peak(checkpoint_every: int | None, lora: bool, calls: int = 3):
    m = random_llama(CFG, 0)
    if lora:
        params = apply_lora(m, LoRASpec(rank=4, targets=["q_proj", "v_proj", "down_proj", "lm_head"]), seed=0)
        for k, t in params.items():   # B = 0 at init would make every lora_A gradient zero
            if "lora_B" in k:
                t.assign(Tensor(np.random.default_rng(1).normal(0, 0.05, t.shape).astype(np.float32))).realize()
    else:
        params = dict(state_dict(m))

    def head(h, x, y):
        return m.logits_from_hidden(h).sparse_categorical_crossentropy(y)
    if checkpoint_every is None:
        loss_fn = lambda x, y: head(m.hidden(x), x, y)   # noqa: E731
    else:
        loss_fn = SegmentedLoss(m.hidden_segments(checkpoint_every) + [head])
    tr = Trainer(params, loss_fn, EngineConfig(lr=1e-3, total_steps=4))
    peaks, losses = [], []
    for seed in range(calls):   # JIT: eager, capture, replay; each on a different batch
        with AllocatorPeak() as peak:
            losses.append(float(tr._micro(*_batch(seed)).item()))
        peaks.append(peak.above_start)
    return {n: g.numpy() for n, g in zip(tr.names, tr.grads)}, losses, max(peaks)


def test_checkpointed_lora_step_same_gradients_less_memory():
    g0, l0, peak0 = _grads_and_peak(None, lora=True)
    g1, l1, peak1 = _grads_and_peak(1, lora=True)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)                 # the same losses (to fp32 rounding)
    assert len(set(l0)) == 3                                      # three different batches
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=2e-5, atol=1e-7, err_msg=k)
    assert any(np.abs(g).max() > 0 for k, g in g0.items() if "lora_A" in k)
    assert peak1 < 0.8 * peak0, (peak0, peak1)


def test_checkpointed_full_finetune_every_2_layers_same_gradients():
    """Full finetuning: the embedding stage has parameters of its own, and segments of 2 layers (every_k).
    One (eager) call each: the JIT path is the LoRA test's."""
    g0, l0, _ = _grads_and_peak(None, lora=False, calls=1)
    g1, l1, _ = _grads_and_peak(2, lora=False, calls=1)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=2e-5, atol=1e-7, err_msg=k)
