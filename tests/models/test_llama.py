import math

import numpy as np
import pytest
from tinygrad import Tensor, UOp, dtypes, nn

from zeropoint.models.llama import (CONFIGS, PUBLISHED_PARAMS, Llama, expected_keys, get_config, param_count,
                                    rope_inv_freq, state_dict)

from zeropoint.models.reference import forward as ref_forward

from .tiny import random_llama


@pytest.mark.parametrize("name", ["smollm2-135m", "llama-3.2-1b", "llama-3-8b", "llama-2-13b", "mistral-7b"])
def test_named_param_counts_match_published(name):
    n = param_count(CONFIGS[name])
    assert abs(n / PUBLISHED_PARAMS[name] - 1) <= 0.005, (name, n)


def test_headline_param_counts():
    # the figures quoted in model cards: 8.03B and 13.02B (rounded), independent of our PUBLISHED table
    assert round(param_count(CONFIGS["llama-3-8b"]) / 1e9, 2) == 8.03
    assert round(param_count(CONFIGS["llama-2-13b"]) / 1e9, 2) == 13.02
    # tying removes exactly one vocab x dim matrix
    untied = get_config("smollm2-135m", tie_embeddings=False)
    assert param_count(untied) - param_count(CONFIGS["smollm2-135m"]) == 49152 * 576


@pytest.mark.parametrize("name", ["tiny", "tiny-untied"])
def test_state_dict_uses_hf_names_and_param_count_is_exact(name):
    cfg = CONFIGS[name]
    m = Llama(cfg, init=False)
    sd = nn.state.get_state_dict(m)
    assert sorted(sd) == sorted(expected_keys(cfg)) == sorted(state_dict(m))
    assert ("lm_head.weight" in sd) == (not cfg.tie_embeddings)
    assert "model.layers.1.self_attn.q_proj.weight" in sd and "model.layers.0.mlp.down_proj.weight" in sd
    assert sum(t.numel() for t in sd.values()) == param_count(cfg)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (cfg.n_kv_heads * cfg.head_dim, cfg.dim)


def test_llama3_rope_scaling_matches_hf_formula():
    # HF's _compute_llama3_parameters, written out per frequency as in transformers
    s = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192}
    base = 1.0 / (500000.0 ** (np.arange(0, 64, 2) / 64))
    want = []
    for f in base:
        wl = 2 * math.pi / f
        if wl < 8192 / 4.0:
            want.append(f)
        elif wl > 8192 / 1.0:
            want.append(f / 32.0)
        else:
            sm = (8192 / wl - 1.0) / (4.0 - 1.0)
            want.append((1 - sm) * f / 32.0 + sm * f)
    got = rope_inv_freq(64, 500000.0, s)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert (got < base).any() and (got == base).any()   # some scaled, some untouched
    with pytest.raises(ValueError, match="not supported"):
        rope_inv_freq(64, 1e4, {"rope_type": "yarn", "factor": 2.0})


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        get_config("tiny", n_kv_heads=3)
    with pytest.raises(KeyError, match="named configs"):
        get_config("gpt-5")


def _tokens(cfg, T, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (1, T)).astype(np.int32)


def test_forward_matches_numpy_reference_with_gqa_and_llama3_rope():
    # tiny-llama3: 4 query heads share 1 kv head, llama3-scaled RoPE, untied head
    cfg = CONFIGS["tiny-llama3"]
    m = random_llama(cfg, 1)
    toks = _tokens(cfg, 12)
    got = m(Tensor(toks)).numpy()[0]
    assert got.dtype == np.float32 and got.shape == (12, cfg.vocab_size)
    sd = {k: v.numpy() for k, v in state_dict(m).items()}
    want = ref_forward(sd, cfg, toks[0], inv_freq=rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
    # and the scaling is not a no-op: plain RoPE gives different logits
    assert np.abs(ref_forward(sd, cfg, toks[0]) - want).max() > 1e-3


def test_kv_cache_decode_equals_full_forward():
    cfg = CONFIGS["tiny-untied"]
    m = random_llama(cfg, 2)
    toks = _tokens(cfg, 9, seed=3)
    full = m(Tensor(toks)).numpy()
    cache = m.make_cache(1, 32)
    parts = [m(Tensor(toks[:, :5]), 0, cache).numpy(), m(Tensor(toks[:, 5:6]), 5, cache).numpy()]
    # later positions as a bound symbolic variable (what the jitted decoder does): compiled once for all positions
    pos = UOp.variable("start_pos", 1, 31)
    for p in range(6, 9):
        parts.append(m(Tensor(toks[:, p:p + 1]), pos.bind(p), cache).numpy())
    np.testing.assert_allclose(np.concatenate(parts, 1), full, atol=1e-5, rtol=0)
    # causal: logits of the first 5 positions do not depend on later tokens
    other = toks.copy()
    other[0, 5:] = (other[0, 5:] + 1) % cfg.vocab_size
    np.testing.assert_allclose(m(Tensor(other)).numpy()[:, :5], full[:, :5], atol=1e-5)
    with pytest.raises(ValueError, match="needs a KV cache"):
        m(Tensor(toks[:, :1]), 3)


def test_half_precision_compute_stays_close_and_keeps_fp32_masters():
    cfg = CONFIGS["tiny-untied"]
    m = random_llama(cfg, 4)
    toks = Tensor(_tokens(cfg, 6, seed=5))
    ref = m(toks).numpy()
    m.compute_dtype = dtypes.float16
    half = m(toks)
    assert half.dtype == dtypes.float32                      # logits come back fp32
    h = half.numpy()
    assert np.abs(h - ref).max() < 5e-2 and np.abs(h - ref).max() > 0    # really ran in fp16
    assert all(t.dtype == dtypes.float32 for t in state_dict(m).values())
