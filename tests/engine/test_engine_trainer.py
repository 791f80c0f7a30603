"""The shared engine on a tiny model: determinism, accumulation equivalence, JIT freshness, fp16 recovery."""
import math
import sys

from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor, dtypes


sys.path.insert(0, str(Path(__file__).resolve().parent))   # helpers beside this file, whatever the import mode
from engine_tinylm import TinyLM, batch  # noqa: E402
from zeropoint.engine import EngineConfig, Trainer, fit, lr_at
from zeropoint.errors import ZeropointError


def _train(steps=4, seed=0, **kw):
    m = TinyLM(seed=seed)
    tr = Trainer(m.w, m.loss, EngineConfig(lr=1e-2, total_steps=steps, **kw))
    rng = np.random.default_rng(seed)
    losses = [tr.step([batch(rng) for _ in range(tr.cfg.grad_accum)]).loss for _ in range(steps)]
    return m, tr, losses


def test_lr_schedule_warmup_then_cosine():
    c = EngineConfig(lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [lr_at(i, c) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, c) == pytest.approx(1.0)
    assert lr_at(9, c) == pytest.approx(0.55)          # halfway down the cosine
    assert lr_at(14, c) == pytest.approx(0.1) and lr_at(100, c) == pytest.approx(0.1)
    vals = [lr_at(i, c) for i in range(4, 15)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_same_seed_same_curve_and_loss_falls():
    _, _, a = _train(steps=6)
    _, _, b = _train(steps=6)
    assert a == b                                        # bit for bit
    assert a[-1] < a[0]
    _, _, c = _train(steps=6, seed=1)
    assert c != a


def test_jit_sees_each_new_batch():
    """Slice-baking guard: under the JIT (steps 3+ replay) different batches must give different losses,
    and the same batch fed twice through the jitted eval must give the same loss."""
    m = TinyLM()
    tr = Trainer(m.w, m.loss, EngineConfig(lr=0.0, total_steps=10, min_lr_ratio=1.0))
    rng = np.random.default_rng(0)
    data = Tensor(np.stack([np.stack(batch(rng)) for _ in range(6)]))   # (6, 2, B, T): fed as slices of one tensor
    losses = [tr.step([(data[i, 0], data[i, 1])]).loss for i in range(6)]
    assert len(set(losses)) == 6, losses
    ev = [tr.eval_loss(m.loss, [(data[i, 0], data[i, 1])]) for i in range(6)]
    assert len(set(ev)) == 6
    assert ev == pytest.approx(losses, rel=1e-6)         # lr 0: weights never moved


def test_grad_accum_equals_big_batch():
    rng = np.random.default_rng(3)
    xs, ys = zip(*[batch(rng, b=2) for _ in range(4)])
    X, Y = np.concatenate(xs), np.concatenate(ys)
    big, small = TinyLM(), TinyLM()
    tb = Trainer(big.w, big.loss, EngineConfig(lr=1e-2, total_steps=5, grad_accum=1))
    ts = Trainer(small.w, small.loss, EngineConfig(lr=1e-2, total_steps=5, grad_accum=4))
    for _ in range(3):                                   # 3 steps: eager, capture, replay
        sb = tb.step([(X, Y)])
        ss = ts.step(list(zip(xs, ys)))
        assert ss.loss == pytest.approx(sb.loss, rel=1e-5)
        assert ss.grad_norm == pytest.approx(sb.grad_norm, rel=1e-5)
    for k in big.w:
        np.testing.assert_allclose(small.w[k].numpy(), big.w[k].numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(TinyLM().w["w1"].numpy(), big.w["w1"].numpy())   # and the weights did move


def test_grad_clip_bounds_update():
    m = TinyLM()
    tr = Trainer(m.w, lambda x, y: m.loss(x, y) * 1000.0, EngineConfig(lr=1e-2, total_steps=3, grad_clip=0.5))
    st = tr.step([batch(np.random.default_rng(0))])
    assert st.grad_norm > 100                             # reported norm is the pre-clip norm
    m2 = TinyLM()
    tr2 = Trainer(m2.w, m2.loss, EngineConfig(lr=1e-2, total_steps=3, grad_clip=0.0))
    assert tr2.step([batch(np.random.default_rng(0))]).grad_norm < 100


def test_fp16_loss_scaling_recovers_from_overflow():
    m = TinyLM(compute_dtype=dtypes.float16)
    # 2**40 times the loss overflows fp16 (max 65504) in the backward matmuls: an injected overflow
    tr = Trainer(m.w, m.loss, EngineConfig(lr=1e-2, total_steps=60, precision="fp16", loss_scale=2.0 ** 40,
                                           growth_interval=3))
    rng = np.random.default_rng(0)
    stats = [tr.step([batch(rng)]) for _ in range(40)]
    skipped = [s.step for s in stats if s.skipped]
    assert skipped and skipped[0] == 1                   # the first step overflowed and was skipped
    first_good = next(s for s in stats if not s.skipped)
    assert stats[0].loss_scale == 2.0 ** 39              # the scale was halved after the overflow
    assert first_good.loss_scale < 2.0 ** 40
    assert math.isfinite(first_good.grad_norm)
    assert any(b.loss_scale > a.loss_scale for a, b in zip(stats, stats[1:]))   # and grew again after good steps
    assert stats[-1].loss < first_good.loss               # training recovered and learns
    assert tr.skipped_steps == len(skipped)


def test_fp16_skipped_step_leaves_weights():
    m = TinyLM(compute_dtype=dtypes.float16)
    before = {k: v.numpy().copy() for k, v in m.w.items()}
    tr = Trainer(m.w, m.loss, EngineConfig(lr=1e-2, total_steps=5, precision="fp16", loss_scale=2.0 ** 60))
    st = tr.step([batch(np.random.default_rng(0))])
    assert st.skipped
    for k in before:
        assert np.array_equal(before[k], m.w[k].numpy()), k
    arrays, scalars = tr.optimizer_state()
    assert all(not a.any() for a in arrays.values())      # moments untouched
    assert scalars["adam_t"] == 0.0


def test_bf16_trains():
    m = TinyLM(compute_dtype=dtypes.bfloat16)
    tr = Trainer(m.w, m.loss, EngineConfig(lr=1e-2, total_steps=8, precision="bf16"))
    rng = np.random.default_rng(0)
    fixed = batch(rng)
    losses = [tr.step([fixed]).loss for _ in range(8)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert m.w["w1"].dtype == dtypes.float32             # masters stay fp32


def test_optimizer_state_roundtrip_continues_identically():
    m1, t1, _ = _train(steps=3)
    arrays, scalars = t1.optimizer_state()
    assert not any(k in arrays for k in m1.w)            # no duplicated params
    m2 = TinyLM(seed=5)
    for k, v in t1.param_arrays().items():
        m2.w[k].assign(Tensor(v)).realize()
    t2 = Trainer(m2.w, m2.loss, EngineConfig(lr=1e-2, total_steps=3))
    t2.load_optimizer_state(arrays, scalars)
    b = batch(np.random.default_rng(9))
    assert t1.step([b]).loss == t2.step([b]).loss
    for k in m1.w:
        assert np.array_equal(m1.w[k].numpy(), m2.w[k].numpy())


def test_bad_inputs_are_named():
    m = TinyLM()
    with pytest.raises(ZeropointError, match="precision"):
        EngineConfig(precision="fp8")
    with pytest.raises(ZeropointError, match="float32"):
        Trainer({"w": Tensor.ones(2, 2, dtype=dtypes.float16)}, m.loss, EngineConfig())
    tr = Trainer(m.w, m.loss, EngineConfig(grad_accum=2))
    with pytest.raises(ZeropointError, match="grad_accum"):
        tr.step([batch(np.random.default_rng(0))])


def test_fit_logs_every_step_evaluates_and_checkpoints(tmp_path):
    from zeropoint.evidence import read_metrics, start_run
    m = TinyLM()
    tr = Trainer(m.w, m.loss, EngineConfig(lr=1e-2, total_steps=5))
    rng = np.random.default_rng(0)
    data = [batch(rng) for _ in range(5)]
    saved = []
    with start_run("test", {"x": 1}, kind="test") as run:
        hist = fit(tr, lambda s: [data[s]], steps=5, run=run, items_per_step=32, eval_every=2,
                   eval_fn=lambda s: {"val_loss": tr.eval_loss(m.loss, [data[0]])}, ckpt_every=2,
                   save_ckpt=lambda s: saved.append(s) or s, progress=False)
    assert [h.step for h in hist] == [1, 2, 3, 4, 5] and saved == [2, 4, 5]
    rows = read_metrics(run)
    assert [r["step"] for r in rows if r["event"] == "step"] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows if r["event"] == "eval"] == [2, 4, 5]
    assert len(run.loss_curve_path.read_text().splitlines()) == 6


def test_weights_not_passed_stay_bit_identical():
    """What LoRA relies on: weights outside the params dict are read by the loss but never written."""
    m = TinyLM()
    emb, out = m.w["emb"].numpy().copy(), m.w["out"].numpy().copy()
    tr = Trainer({k: v for k, v in m.w.items() if k not in ("emb", "out")}, m.loss,
                 EngineConfig(lr=1e-2, total_steps=3, weight_decay=0.1))
    rng = np.random.default_rng(0)
    w1 = m.w["w1"].numpy().copy()
    for _ in range(3):
        tr.step([batch(rng)])
    assert np.array_equal(m.w["emb"].numpy(), emb) and np.array_equal(m.w["out"].numpy(), out)
    assert not np.array_equal(m.w["w1"].numpy(), w1)
