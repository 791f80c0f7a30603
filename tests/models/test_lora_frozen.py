"""The frozen LoRA base without fp32 masters: bf16 storage, NF4/int8 projections, and merges into a bf16 base
that are exact fp32 arithmetic rounded once."""
import numpy as np
import pytest
from tinygrad import Tensor, dtypes
from tinygrad.helpers import Context

from tests.models.tiny import random_llama
from zeropoint.errors import ZeropointError
from zeropoint.models.basequant import NF4Weight, bf16_bits_to_f32, f32_to_bf16_bits, weight_numpy_f32
from zeropoint.models.llama import get_config, state_dict
from zeropoint.models.lora import LoRASpec, apply_lora, freeze_base, merge_lora

CFG = get_config("tiny-untied", n_layers=1)
SPEC = LoRASpec(rank=4, alpha=8, targets=["q_proj", "down_proj", "lm_head"])


def _wrapped(seed=0):
    m = random_llama(CFG, seed)
    ad = apply_lora(m, SPEC, seed=0)
    for k, t in ad.items():       # a real delta, large enough to move bf16 values
        if "lora_B" in k:
            t.assign(Tensor(np.random.default_rng(1).normal(0, 0.2, t.shape).astype(np.float32))).realize()
    return m, ad


def test_bf16_base_keeps_no_fp32_master_and_merges_exactly_once_rounded():
    m, ad = _wrapped()
    fp32 = {k: t.numpy() for k, t in state_dict(m).items()}
    adapters = {k: t.numpy() for k, t in ad.items()}
    with Context(EMULATED_DTYPES="bfloat16"):
        info = freeze_base(m, dtypes.bfloat16)
    sd = state_dict(m)
    for k, t in sd.items():
        assert t.dtype == (dtypes.float32 if ".lora_" in k else dtypes.bfloat16), k
    assert info["frozen_bytes"] == 2 * sum(v.size for k, v in fp32.items() if ".lora_" not in k)
    for k in ad:                                                     # adapters untouched, still fp32 masters
        np.testing.assert_array_equal(ad[k].numpy(), adapters[k])
    w16 = weight_numpy_f32(sd["model.layers.0.mlp.down_proj.weight"])
    np.testing.assert_array_equal(w16, bf16_bits_to_f32(f32_to_bf16_bits(fp32["model.layers.0.mlp.down_proj.weight"])))

    a, b = ad["model.layers.0.mlp.down_proj.lora_A.weight"].numpy(), ad["model.layers.0.mlp.down_proj.lora_B.weight"].numpy()
    merge_lora(m)
    merged = state_dict(m)["model.layers.0.mlp.down_proj.weight"]
    assert merged.dtype == dtypes.bfloat16
    want = f32_to_bf16_bits(w16 + np.float32(SPEC.scale) * (b @ a))              # fp32 arithmetic, one rounding
    np.testing.assert_array_equal(merged.bitcast(dtypes.uint16).numpy(), want)
    twice = f32_to_bf16_bits(w16 + bf16_bits_to_f32(f32_to_bf16_bits(np.float32(SPEC.scale) * (b @ a))))
    assert (twice != want).any()                                   # rounding the delta first would differ
    assert (want != f32_to_bf16_bits(w16)).mean() > 0.5             # and the merge did move the weights


def test_nf4_base_quantises_projections_and_merges_into_its_dequantised_values():
    m, ad = _wrapped()
    x = Tensor(np.random.default_rng(0).integers(0, CFG.vocab_size, (1, 8)).astype(np.int32))
    info = freeze_base(m, dtypes.float32, "nf4")
    assert info["quantised_projections"] == 7 * CFG.n_layers
    attn = m.model.layers[0].self_attn
    assert isinstance(attn.q_proj.weight, NF4Weight) and isinstance(attn.k_proj.weight, NF4Weight)
    adapted = m(x).numpy()
    merge_lora(m)
    assert all(isinstance(t, Tensor) and t.dtype == dtypes.float32 for t in state_dict(m).values())
    np.testing.assert_allclose(m(x).numpy(), adapted, rtol=1e-4, atol=1e-4)   # the trained function, plain weights
    with pytest.raises(ZeropointError, match="base_quant"):
        freeze_base(_wrapped()[0], dtypes.float32, "nf3")
