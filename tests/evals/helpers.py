"""A tiny real model (random-init 2-layer Llama, vocab 512) and a byte tokenizer for fast harness tests."""
from __future__ import annotations

import numpy as np


class ByteTokenizer:
    bos_id = 256
    eos_id = 257

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return ([self.bos_id] if add_bos else []) + list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def tiny_model(seed: int = 0):
    from tinygrad import Tensor
    from zeropoint.models.llama import Llama, get_config
    Tensor.manual_seed(seed)
    return Llama(get_config("tiny-untied"))


def reference_loglikelihood(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """Brute force: one unbatched full forward, log-softmax in float64 numpy."""
    from tinygrad import Tensor
    seq = ctx + cont
    logits = model(Tensor(np.array([seq[:-1]], dtype=np.int32))).numpy()[0].astype(np.float64)
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    n = len(seq) - 1
    rows = range(n - len(cont), n)
    ll = sum(lp[j, seq[j + 1]] for j in rows)
    greedy = all(int(logits[j].argmax()) == seq[j + 1] for j in rows)
    return float(ll), greedy
