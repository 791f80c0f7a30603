"""zpctl bench on the vision recipes: the ViT step of the Fashion-MNIST config (one block, batch 8) in tinygrad
and in its PyTorch twin, same weights and batches: images/s of both, their ratio, and losses that agree."""
import json

import pytest
from typer.testing import CliRunner

from zeropoint.cli.main import app

from tests.helpers import REPO


@pytest.mark.slow
def test_bench_vit_compare_torch(tmp_path, monkeypatch, zp_home):
    pytest.importorskip("torch")
    monkeypatch.setenv("ZP_CACHE_DIR", str(tmp_path))
    import zeropoint.perf.peak as P
    monkeypatch.setattr(P, "calibrate_cpu", lambda: 1e9)
    res = CliRunner().invoke(app, ["bench", str(REPO / "configs/vision/vit-tiny_fashion-mnist.yaml"), "--compare", "torch",
                                   "--steps", "1", "--repeats", "2", "--torch-threads", "1", "--json",
                                   "--set", "model.overrides.depth=1", "--set", "train.micro_batch_size=8"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["unit"] == "images" and rec["images_per_step"] == 8 and "tokens_per_s" not in rec["tinygrad"]
    tg, th = rec["tinygrad"], rec["torch"]
    assert tg["images_per_s"]["median"] > 0 and th["images_per_s"]["median"] > 0 and th["threads"] == 1
    r = rec["ratio_tinygrad_over_torch"]
    assert 0 < r["min"] <= r["median"] <= r["max"]
    # same weights, batches and AdamW: the first loss agrees, and so do the later ones, which (the head starting
    # at zero makes the first loss ln 10 on both sides) are the ones that exercise the transformer body
    assert rec["first_loss"]["abs_diff"] < 1e-4
    assert len(tg["losses"]) == len(th["losses"]) == 4 and rec["loss_max_abs_diff"] < 1e-4
    assert tg["losses"][-1] != tg["losses"][1] != tg["losses"][0]
    assert rec["flops"]["per_step"] == 8 * rec["flops"]["train_per_sample"] and tg["mfu"] > 0
    mp = rec["memory_plan"]   # the model-info plan is in the right range of what tinygrad held
    assert 0.5 < mp["measured_over_plan"] < 3, mp
    run_dir = zp_home / "runs" / rec["run_id"]
    for f in ("bench.json", "perf.json", "perf.png", "run.json"):
        assert (run_dir / f).is_file()
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    assert summary["tinygrad_images_per_s"] == tg["images_per_s"]["median"]


def test_tune_names_what_it_can_search():
    res = CliRunner().invoke(app, ["tune", str(REPO / "configs/vision/vit-micro_digits.yaml")])
    assert res.exit_code == 2 and "searches llm_finetune" in res.output and "zpctl bench" in res.output
