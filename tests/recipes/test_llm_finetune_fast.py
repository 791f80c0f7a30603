"""Fast checks of the LLM recipe: config schema, model info, governance before data, LoRA mechanics."""
import json

import numpy as np
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner

from zeropoint.cli.main import app
from zeropoint.recipes import load_config
from zeropoint.errors import ConfigError, ZeropointError
from zeropoint.recipes.llm_finetune import LLMFinetuneConfig, model_info

runner = CliRunner()


@pytest.mark.parametrize("name,published", [("llama-3-8b", 8.03e9), ("llama-2-13b", 13.02e9)])
def test_model_info_big_configs_match_published(name, published):
    r = runner.invoke(app, ["model", "info", f"configs/llm/{name}_lora.yaml", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert abs(info["params"] - published) / published < 0.005
    assert 0 < info["trainable_params"] < info["params"] * 0.01
    for k in ("weights_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes"):
        assert info["memory"][k] > 0
    assert info["memory"]["optimizer_bytes"] == 8 * info["trainable_params"]   # AdamW m+v in fp32
    assert info["memory"]["grads_bytes"] == 4 * info["trainable_params"]
    # activations scale with the batch
    r2 = runner.invoke(app, ["model", "info", f"configs/llm/{name}_lora.yaml", "--json", "--set", "train.micro_batch_size=2"])
    assert json.loads(r2.stdout)["memory"]["activations_bytes"] == 2 * info["memory"]["activations_bytes"]
    assert "published" in runner.invoke(app, ["model", "info", f"configs/llm/{name}_lora.yaml"]).stdout


def test_all_llm_configs_validate():
    import glob
    names = sorted(glob.glob("configs/llm/*.yaml"))
    assert len(names) >= 12
    for f in names:
        cfg, _ = load_config(f)
        assert isinstance(cfg, LLMFinetuneConfig) and model_info(cfg)["params"] > 0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config("configs/llm/tiny_full.yaml", ["train.step=3"])
    with pytest.raises(ConfigError, match="method"):
        load_config("configs/llm/tiny_full.yaml", ["method=qlora"])


def test_lora_trainable_count_matches_wrapped_model():
    from zeropoint.models.llama import get_config, state_dict
    from zeropoint.models.lora import LoRASpec, apply_lora, count_lora_params, merge_lora
    from tests.models.tiny import realized_llama
    cfg = get_config("tiny-untied")
    m = realized_llama(cfg, 0)   # Llama(cfg) after manual_seed(0), weights realized once
    spec = LoRASpec(rank=4, alpha=8, targets=["q_proj", "v_proj", "down_proj", "lm_head"])
    x = Tensor(np.random.default_rng(0).integers(0, 256, (1, 8)).astype(np.int32))
    base = m(x).numpy()
    before = {k: v.numpy().copy() for k, v in state_dict(m).items()}
    ad = apply_lora(m, spec, seed=0)
    assert sum(int(np.prod(t.shape)) for t in ad.values()) == count_lora_params(cfg, spec)
    assert "model.layers.0.self_attn.q_proj.lora_A.weight" in ad and "lm_head.lora_B.weight" in ad
    np.testing.assert_array_equal(m(x).numpy(), base)           # B = 0: the wrapped model starts equal
    for k, t in ad.items():                                       # give the adapters a real delta
        if k.endswith("lora_B.weight"):
            t.assign(Tensor(np.random.default_rng(1).normal(0, 0.05, t.shape).astype(np.float32))).realize()
    adapted = m(x).numpy()
    assert np.abs(adapted - base).max() > 1e-3
    merged = merge_lora(m)
    assert merged == 2 * cfg.n_layers + cfg.n_layers + 1
    np.testing.assert_allclose(m(x).numpy(), adapted, atol=1e-4, rtol=1e-4)   # merged == wrapped
    sd = state_dict(m)
    assert set(sd) == set(before)                                 # plain HF names again
    assert np.array_equal(sd["model.layers.0.mlp.up_proj.weight"].numpy(), before["model.layers.0.mlp.up_proj.weight"])


def test_lora_spec_errors():
    from zeropoint.models.lora import LoRASpec
    with pytest.raises(ZeropointError, match="unknown lora.targets"):
        LoRASpec(targets=["qproj"])
    with pytest.raises(ZeropointError, match="rank"):
        LoRASpec(rank=0)


def test_training_refuses_unapproved_data_before_reading(zp_home):
    r = runner.invoke(app, ["train", "configs/llm/tiny_full.yaml", "--json"])
    assert r.exit_code == 2
    assert "sotu" in r.output and not (zp_home / "runs").exists()


def test_training_refuses_mock_flag(monkeypatch):
    monkeypatch.setenv("ZP_MOCK", "1")
    r = runner.invoke(app, ["train", "configs/llm/tiny_full.yaml"])
    assert r.exit_code == 2 and "mock flag" in r.output
