"""Seeded random-weight tiny Llamas for tests, with their weights realized once.

`Llama(cfg)` initialises with lazy `Tensor.normal` graphs: nothing realizes the parameters themselves, so every
forward pass re-schedules, re-compiles and recomputes the random init of every weight (measured: a 9-token forward
plus a 5-step KV-cache decode of tiny-untied cost 25 s of CPU that way, 10 s from realized weights). These models
have the same init distribution as `Llama(cfg)` (N(0, 0.02) embeddings and projections, unit norms), drawn with
numpy, and load through the project's own `load_weights`."""
import numpy as np
from tinygrad import Tensor, dtypes

from zeropoint.models.llama import Llama, LlamaConfig, get_config, load_weights, state_dict


def random_llama(cfg: LlamaConfig | str, seed: int = 0, compute_dtype=dtypes.float32) -> Llama:
    cfg = get_config(cfg) if isinstance(cfg, str) else cfg
    m = Llama(cfg, compute_dtype, init=False)
    rng = np.random.default_rng(seed)
    w = {k: Tensor(np.ones(t.shape, np.float32) if k.endswith("norm.weight")
                   else (0.02 * rng.standard_normal(t.shape)).astype(np.float32))
         for k, t in state_dict(m).items()}
    load_weights(m, w)
    return m


def realized_llama(cfg: LlamaConfig | str, seed: int = 0) -> Llama:
    """`Llama(cfg)` exactly as `Tensor.manual_seed(seed)` draws it (the same weights, bit for bit), realized once.
    For tests whose gates were calibrated on those particular weights (int8 top-1 agreement on 32 tokens)."""
    cfg = get_config(cfg) if isinstance(cfg, str) else cfg
    Tensor.manual_seed(seed)
    m = Llama(cfg)
    Tensor.realize(*state_dict(m).values())
    return m
