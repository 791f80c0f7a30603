"""QLoRA base quantisation: the published NF4 levels, a block quantised by hand, double-quantised absmax,
int8 per-row, and the dequantisation fused into the matmul (no full-precision weight held by the step)."""
from statistics import NormalDist

import numpy as np
import pytest
from tinygrad import Tensor, TinyJit, dtypes

from zeropoint.errors import ZeropointError
from zeropoint.models import basequant as bq
from zeropoint.perf.memory import AllocatorPeak


def test_nf4_levels_are_the_published_normal_quantiles():
    """QLoRA: 8 positive and 7 negative quantiles of N(0, 1) between offset 0.9677083 and 1/2, an exact 0,
    normalised to [-1, 1]."""
    offset, ppf = 0.9677083, NormalDist().inv_cdf
    pos = [ppf(float(p)) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-ppf(float(p)) for p in np.linspace(offset, 0.5, 8)[:-1]]
    levels = np.sort(np.array(pos + [0.0] + neg))
    levels /= levels.max()
    np.testing.assert_allclose(bq.NF4_LEVELS, levels, atol=2e-7)
    assert bq.NF4_LEVELS[7] == 0.0 and bq.NF4_LEVELS[0] == -1.0 and bq.NF4_LEVELS[15] == 1.0


def test_nf4_block_quantised_by_hand():
    """One block of 64, absmax 2: x/2 = 1, -1, 0, .3, -.3, .05, 0... Nearest levels by hand: 1 -> 15, -1 -> 0,
    0 -> 7, .3 -> 11 (0.3379; the midpoint with 0.2461 is 0.2920), -.3 -> 4 (-0.2844; midpoint -0.3397),
    .05 -> 8 (0.0796; midpoint 0.0398). Packed high nibble first: F0 7B 48 77 77 ..."""
    x = np.zeros((1, 64), np.float32)
    x[0, :6] = [2.0, -2.0, 0.0, 0.6, -0.6, 0.1]
    q = bq.quantize_nf4_np(x)
    assert q["codes"].tolist() == [0xF0, 0x7B, 0x48] + [0x77] * 29
    # a single absmax: centred on its own mean it is 0, so the second level stores it exactly
    np.testing.assert_array_equal(q["absmax_scale_offset"], [[0.0, 2.0]])
    want = np.zeros(64, np.float32)
    want[:6] = [2.0, -2.0, 0.0, 2 * 0.33791524171829224, 2 * -0.28444138169288635, 2 * 0.07958029955625534]
    np.testing.assert_allclose(bq.dequantize_nf4_np(q, x.shape)[0], want, rtol=1e-7)
    np.testing.assert_allclose(bq.NF4Weight(x).cast(dtypes.float32).numpy()[0], want, rtol=1e-7)


def test_dynamic_map_and_its_arithmetic_decoder():
    m = bq.DYNAMIC_MAP
    assert len(np.unique(m)) == 256 and m.min() >= -1 and m.max() == 1.0 and 0.0 in m
    assert np.sum(m > 0) == 128 and np.sum(m < 0) == 127
    dec = bq._decode_dynamic(Tensor(np.arange(256, dtype=np.uint8))).numpy()
    np.testing.assert_allclose(dec, m, rtol=1e-6, atol=1e-12)


def test_nf4_double_quant_error_and_tinygrad_matches_numpy():
    rng = np.random.default_rng(0)
    w = (0.02 * rng.standard_normal((96, 640))).astype(np.float32)    # 960 blocks: four absmax blocks of 256
    q = bq.quantize_nf4_np(w)
    deq = bq.dequantize_nf4_np(q, w.shape)
    absmax = np.abs(w.reshape(-1, 64)).max(1)
    absmax_hat = np.abs(deq.reshape(-1, 64)).max(1)                # the +-1 level maps back to the absmax
    assert np.abs(absmax_hat / absmax - 1).max() < 0.01            # 8-bit second level: under 1% per block
    rel_rms = np.sqrt(np.mean((deq - w) ** 2)) / w.std()
    assert 0.08 < rel_rms < 0.11, rel_rms                          # NF4 on normal weights: ~0.09
    np.testing.assert_allclose(bq.NF4Weight(w).cast(dtypes.float32).numpy(), deq, rtol=1e-6, atol=1e-9)
    assert bq.bits_per_weight("nf4", w.shape) == pytest.approx(4.13, abs=0.01)
    with pytest.raises(ZeropointError, match="multiple of 64"):
        bq.quantize_nf4_np(np.ones((3, 5), np.float32))


def test_int8_per_row():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 48)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)[:, None]
    q = bq.quantize_int8_np(w)
    assert q["q"].dtype == np.int8 and np.abs(q["q"]).max(axis=1).tolist() == [127] * 8
    err = np.abs(q["q"] * q["scale"] - w)
    assert (err <= q["scale"] / 2 + 1e-6).all()                   # round to nearest, per row
    iw = bq.Int8Weight(w)
    np.testing.assert_array_equal(iw.cast(dtypes.float32).numpy(), iw.numpy())


def test_nf4_dequant_fuses_into_the_matmul_and_its_backward():
    """The jitted forward + input-gradient of x @ W^T holds no dequantised copy of W: the step's buffers
    (memory planner arena) stay far below W's fp32 size."""
    rng = np.random.default_rng(2)
    w = bq.NF4Weight((0.02 * rng.standard_normal((512, 512))).astype(np.float32))
    a = Tensor(rng.standard_normal(512).astype(np.float32)).realize()

    def step(x):
        (g,) = ((x * a) @ w.cast(dtypes.float32).T).square().sum().gradient(a)
        return g.realize()
    jstep = TinyJit(step)
    with AllocatorPeak() as peak:
        for i in range(3):
            jstep(Tensor(rng.standard_normal((8, 512)).astype(np.float32)).realize())
    assert peak.above_start < 512 * 512 * 4 / 8, peak.above_start  # the fp32 weight would be 1 MiB
