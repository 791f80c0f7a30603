"""A tiny language model for engine tests (the real Llama lives in models/llama.py)."""
import numpy as np
from tinygrad import Tensor, dtypes


class TinyLM:
    """Embedding -> one tanh MLP -> logits, fp32 masters cast to `compute_dtype` for matmuls."""

    def __init__(self, vocab=32, dim=16, seed=0, compute_dtype=dtypes.float32):
        rng = np.random.default_rng(seed)
        self.compute_dtype = compute_dtype
        self.w = {"emb": Tensor(rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)).realize(),
                  "w1": Tensor(rng.normal(0, 0.3, (dim, dim)).astype(np.float32)).realize(),
                  "b1": Tensor(np.zeros(dim, np.float32)).realize(),
                  "out": Tensor(rng.normal(0, 0.3, (dim, vocab)).astype(np.float32)).realize()}

    def logits(self, x):
        cd = self.compute_dtype
        h = self.w["emb"][x].cast(cd)
        h = (h @ self.w["w1"].cast(cd) + self.w["b1"].cast(cd)).tanh()
        return (h @ self.w["out"].cast(cd)).float()

    def loss(self, x, y):
        return self.logits(x).sparse_categorical_crossentropy(y)


def batch(rng, b=4, t=8, vocab=32):
    x = rng.integers(0, vocab, (b, t)).astype(np.int32)
    return x, ((x + 1) % vocab).astype(np.int32)
