"""Tiny LoRA run end to end: only adapters train and are checkpointed, base weights never move, `zpctl lora merge`
writes an HF directory whose logits equal the adapted model's (<= 1e-5, fp32)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner


sys.path.insert(0, str(Path(__file__).resolve().parent))   # helpers beside this file, whatever the import mode
from llm_helpers import approve_sotu_slice  # noqa: E402
from zeropoint.cli.main import app

SETS = ["--set", "train.steps=4", "--set", "train.ckpt_every=4", "--set", "train.eval_every=0"]


@pytest.mark.slow
def test_tiny_lora_adapters_only_merge_and_hf_round_trip(zp_home, tmp_path):
    from zeropoint.models.llama import state_dict
    from zeropoint.models.lora import adapter_tensors
    from zeropoint.models.registry import load_model
    from zeropoint.models.llm import open_checkpoint, open_lm
    approve_sotu_slice()
    runner = CliRunner()
    r = runner.invoke(app, ["train", "configs/llm/tiny_lora.yaml", "--json", *SETS])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["base_weights_unchanged"] is True                 # fingerprinted before and after training
    assert out["params_trainable"] < out["params_total"] / 5
    assert out["last_loss"] < out["first_loss"]
    ck = Path(out["checkpoint"])
    assert (ck / "adapter.safetensors").is_file() and not (ck / "model.safetensors").exists()
    assert json.loads((ck / "adapter_config.json").read_text())["r"] == 4
    assert runner.invoke(app, ["ckpt", "verify", str(ck)]).exit_code == 0

    lm = open_checkpoint(ck, merge=False)
    model, mc = lm.model, lm.config
    ad = adapter_tensors(model)
    assert any(np.abs(t.numpy()).max() > 0 for k, t in ad.items() if "lora_B" in k)   # the adapters did train
    x = Tensor(np.random.default_rng(0).integers(0, 256, (2, 16)).astype(np.int32))
    adapted = model(x).numpy()

    hf = tmp_path / "merged"
    r = runner.invoke(app, ["lora", "merge", str(ck), "--out", str(hf), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["merged_modules"] == 2 * mc.n_layers + 1
    assert (hf / "config.json").is_file()
    back, _, _ = load_model(str(hf))
    assert set(state_dict(back)) == set(state_dict(model)) - {k for k in state_dict(model) if ".lora_" in k}
    diff = np.abs(back(x).numpy() - adapted).max()
    assert diff <= 1e-5, diff
    r = runner.invoke(app, ["lora", "merge", str(ck), "--out", str(hf)])
    assert r.exit_code == 2 and "exists" in r.output              # never overwrites
    # the one loader evals, red-team and export use opens the checkpoint verified, adapters merged
    lm2 = open_lm(ck)
    assert lm2.info["kind"] == "checkpoint" and lm2.info["method"] == "lora"
    assert np.abs(lm2.model(x).numpy() - adapted).max() <= 1e-5
