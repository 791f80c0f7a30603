"""The memory options through the recipe on the tiny LoRA config: a QLoRA run (NF4 base, checkpointed layers) whose
loss falls; a bf16-base run that resumes exactly and merges; the plan of the 8B/13B QLoRA configs."""
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad.helpers import Context
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))   # helpers beside this file, whatever the import mode
from llm_helpers import approve_sotu_slice  # noqa: E402
from zeropoint.cli.main import app
from zeropoint.errors import ConfigError
from zeropoint.recipes import load_config
from zeropoint.recipes.llm_finetune import model_info

runner = CliRunner()


def _plan(path, *sets):
    r = runner.invoke(app, ["model", "info", path, "--json", *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_qlora_plans_fit_one_gpu_and_every_option_lowers_the_plan():
    gib = 2 ** 30
    p13, p8 = _plan("configs/llm/llama-2-13b_qlora.yaml"), _plan("configs/llm/llama-3-8b_qlora.yaml")
    for p in (p13, p8):
        assert (p["micro_batch_size"], p["seq_len"]) == (1, 2048)
        assert p["base_quant"] == "nf4" and p["activation_checkpointing"] == "layers"
    assert p13["memory"]["total_bytes"] <= 24 * gib and p8["memory"]["total_bytes"] <= 16 * gib
    base = _plan("configs/llm/llama-3-8b_qlora.yaml", "lora.base_quant=none", "train.activation_checkpointing=none")
    nf4 = _plan("configs/llm/llama-3-8b_qlora.yaml", "train.activation_checkpointing=none")
    ck = _plan("configs/llm/llama-3-8b_qlora.yaml", "lora.base_quant=none")
    assert nf4["memory"]["weights_bytes"] < 0.45 * base["memory"]["weights_bytes"]
    assert ck["memory"]["activations_bytes"] < 0.2 * base["memory"]["activations_bytes"]
    assert ck["memory"]["weights_bytes"] == base["memory"]["weights_bytes"]
    fp32 = _plan("configs/llm/llama-3-8b_qlora.yaml", "lora.base_quant=none", "train.precision=fp32")
    assert base["frozen_base_bytes"] * 2 == fp32["frozen_base_bytes"]          # bf16: 2 bytes a frozen weight
    k4 = _plan("configs/llm/llama-3-8b_qlora.yaml", "train.activation_checkpointing=every_k",
               "train.activation_checkpointing_k=4")
    assert k4["activations_detail"]["segments"] == 8 and k4["activations_detail"]["layers_kept"] == 4


def test_memory_option_errors_name_the_fix():
    with pytest.raises(ConfigError, match="method: lora"):
        load_config("configs/llm/tiny_full.yaml", ["lora.base_quant=nf4"])
    with pytest.raises(ConfigError, match="lora.dropout: 0"):
        load_config("configs/llm/tiny_lora.yaml", ["lora.dropout=0.1", "train.activation_checkpointing=layers"])
    with pytest.raises(ConfigError, match="llm_finetune only"):
        load_config("configs/vision/vit-micro_digits.yaml", ["train.activation_checkpointing=layers"])
    with pytest.raises(ConfigError):
        load_config("configs/llm/tiny_lora.yaml", ["lora.base_quant=nf2"])
    assert model_info(load_config("configs/llm/tiny_lora.yaml")[0])["base_quant"] == "none"


@pytest.mark.slow
def test_qlora_run_learns_resumes_exactly_and_merges(zp_home, tmp_path):
    """One tiny QLoRA run with every option: NF4 projections, the rest of the frozen base in bf16 (no fp32 master),
    every layer checkpointed. The loss falls and the base never moves. Resuming from the step-2 checkpoint (the
    last one removed, as if the run had died) repeats the original losses bit for bit, and `lora merge` writes a
    plain HF model. (The merge into a bf16 base, exact fp32 arithmetic rounded once: tests/models/test_lora_frozen.py.)"""
    from zeropoint.recipes.llm_finetune import run
    approve_sotu_slice()
    sets = ["train.eval_every=0", "train.steps=4", "train.ckpt_every=2", "train.keep_ckpts=3", "train.precision=bf16",
            "lora.base_quant=nf4", "train.activation_checkpointing=layers"]
    cfg, _ = load_config("configs/llm/tiny_lora.yaml", sets)
    # NOOPT=1 (no upcast/unroll inside a kernel; part of the compile-cache key): kernel building is most of this
    # test's cost, and what it checks (loss falls, base frozen, exact resume, merge) does not depend on the tiling
    with Context(NOOPT=1):
        out = run(cfg, progress=False)
    assert out["last_loss"] < out["first_loss"] and out["final_eval"]["val_loss"] < out["base_eval"]["val_loss"]
    assert out["base_weights_unchanged"] is True
    run_dir = Path(out["run_dir"])
    rec = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    frozen = next(e for e in rec if e.get("event") == "model")["frozen_base"]
    assert frozen["quantised_projections"] == 7 * 2 and frozen["frozen_dtype"] == "dtypes.bfloat16"

    def curve():
        return [(int(x["step"]), x["loss"]) for x in csv.DictReader(open(run_dir / "loss_curve.csv"))]
    before = curve()
    shutil.rmtree(run_dir / "checkpoints" / "step-00000004")
    with Context(NOOPT=1):
        again = run(cfg, run_id=out["run_id"], resume=True, progress=False)
    assert again["start_step"] == 2
    assert curve() == before and [s for s, _ in before] == [1, 2, 3, 4]

    r = runner.invoke(app, ["lora", "merge", str(run_dir / "checkpoints" / "step-00000004"),
                            "--out", str(tmp_path / "merged"), "--json"])
    assert r.exit_code == 0, r.output[-3000:]
    from tinygrad import Tensor

    from zeropoint.models.registry import load_model
    merged, _, _ = load_model(str(tmp_path / "merged"))
    assert np.isfinite(merged(Tensor(np.arange(16, dtype=np.int32).reshape(1, 16))).numpy()).all()
