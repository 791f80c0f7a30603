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
    """tiny-untied as `Tensor.manual_seed(seed); Llama(cfg)` draws it, realized once (a lazy init would be
    recomputed inside every forward pass)."""
    from tests.models.tiny import realized_llama
    return realized_llama("tiny-untied", seed)


def reference_loglikelihoods(model, requests, T: int = 32, B: int = 8) -> list[tuple[float, bool]]:
    """Brute force, independent of the scorer: full logits for every position of each (truncated) sequence,
    right-padded into one [B, T] batch (causal, so padding cannot leak), log-softmax in float64 numpy."""
    from tinygrad import Tensor
    seqs = [(list(c) + list(x))[-(T + 1):] for c, x in requests]
    toks = np.zeros((B, T), dtype=np.int32)
    for i, s in enumerate(seqs):
        toks[i, :len(s) - 1] = s[:-1]
    logits = model(Tensor(toks)).numpy().astype(np.float64)
    out = []
    for i, (s, (_, cont)) in enumerate(zip(seqs, requests)):
        lg = logits[i]
        lp = lg - lg.max(-1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
        n = len(s) - 1
        rows = range(n - len(cont), n)
        out.append((float(sum(lp[j, s[j + 1]] for j in rows)), all(int(lg[j].argmax()) == s[j + 1] for j in rows)))
    return out
