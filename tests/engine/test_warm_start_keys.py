"""A stored training step is only replayed for the setting it was built for (engine/jitcache.py + models/llm.py).

The memory options (issue 30) change the captured step without changing its inputs: an NF4/int8 or bf16 frozen base,
activation checkpointing every layer or every k layers, the precision. Each must give the micro-step a different
cache key, and a warm process with another setting must compile its own step, never load the stored one."""
import sys
from pathlib import Path

import numpy as np
import pytest
import tinygrad.codegen as codegen
import tinygrad.engine.realize as realize

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.models.tiny import random_llama  # noqa: E402
from zeropoint.engine import EngineConfig, Trainer, compute_dtype, device_array, jitcache  # noqa: E402
from zeropoint.models.llama import get_config  # noqa: E402
from zeropoint.models.llm import lm_loss, trainable_params, warm_start_args  # noqa: E402
from zeropoint.models.lora import LoRASpec  # noqa: E402

CFG = get_config("tiny-untied", dim=32, n_layers=3, n_heads=2, n_kv_heads=1, hidden_dim=64, vocab_size=64,
                 max_seq_len=16)
B, T = 2, 8


def _trainer(precision="fp32", base_quant="none", ckpt="none", k=2):
    model = random_llama(CFG, 0, compute_dtype(precision))   # numpy init: no random kernels to build
    lora = LoRASpec(rank=2, alpha=4, targets=["q_proj", "v_proj"], base_quant=base_quant)
    params = trainable_params(model, "lora", lora, 0, precision=precision)
    return Trainer(params, lm_loss(model, ckpt, k), EngineConfig(lr=1e-2, total_steps=4, precision=precision),
                   **warm_start_args(model, params, method="lora", lora=lora, activation_checkpointing=ckpt,
                                     activation_checkpointing_k=k))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return [device_array(rng.integers(0, 64, (B, T)).astype(np.int32)) for _ in range(2)]


SETTINGS = {
    "plain": {},
    "bf16": {"precision": "bf16"},
    "nf4": {"base_quant": "nf4"},
    "int8": {"base_quant": "int8"},
    "layers": {"ckpt": "layers"},
    "every_2": {"ckpt": "every_k", "k": 2},
    "every_3": {"ckpt": "every_k", "k": 3},
    "nf4_layers": {"base_quant": "nf4", "ckpt": "layers"},
}


def test_every_memory_setting_has_its_own_step_key():
    keys = {name: jitcache._key_sha(_trainer(**kw)._micro.full_key(_batch(), {})) for name, kw in SETTINGS.items()}
    assert len(set(keys.values())) == len(keys), keys
    # the key does not depend on an unused k (checkpointing off), so such a change still starts warm
    assert jitcache._key_sha(_trainer(k=5)._micro.full_key(_batch(), {})) == keys["plain"]


@pytest.mark.slow
def test_a_step_checkpointed_otherwise_is_compiled_not_replayed(tmp_path, monkeypatch):
    # every layer vs every 2 layers: the same inputs, bound tensors and dtypes; only the chain of realizes differs
    monkeypatch.setenv("ZP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(codegen, "to_program_cache", codegen.to_program_cache)   # restored afterwards
    monkeypatch.setattr(realize, "to_program_cache", realize.to_program_cache)
    layers = _trainer(ckpt="layers")
    loss = float(layers._micro(*_batch()).item())
    assert layers._micro.info["source"] == "compiled" and layers._micro.info["entry"]
    again = _trainer(ckpt="layers")          # control: the same setting does load, so the next check can fail
    assert float(again._micro(*_batch()).item()) == loss and again._micro.info["source"] == "cache"
    other = _trainer(ckpt="every_k", k=2)
    assert float(other._micro(*_batch()).item()) == pytest.approx(loss, rel=1e-5)
    assert other._micro.info["source"] == "compiled" and other._micro.info["entry"] != layers._micro.info["entry"]
