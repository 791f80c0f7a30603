"""`lm_loss` is the mean cross-entropy over labelled positions only (label -1: prompt or padding).

tinygrad 0.14's `sparse_categorical_crossentropy(ignore_index=-1)` ignores nothing (-1 is its "no ignore index"
value), so its mean divided by every position and a prompt-masked or padded batch read low."""
import numpy as np
from tinygrad import Tensor

from zeropoint.models.llama import CONFIGS
from zeropoint.models.llm import lm_loss

from .tiny import random_llama


def test_lm_loss_averages_over_labelled_positions_only():
    cfg = CONFIGS["tiny-untied"]
    m = random_llama(cfg, 3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (2, 8)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (2, 8)).astype(np.int32)
    y[0, :5] = -1                      # a masked prompt
    y[1, 6:] = -1                      # padding
    logits = m(Tensor(x)).numpy().astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    keep = y != -1
    want = -logp[keep, y[keep]].mean()
    got = lm_loss(m)(Tensor(x), Tensor(y)).item()
    assert abs(got - want) < 1e-4 * want, (got, want)
    # an all-padding batch is 0, not NaN
    assert lm_loss(m)(Tensor(x), Tensor(np.full_like(y, -1))).item() == 0.0
