"""`zpctl model info` on the vision configs: the parameter count it prints equals the size of the model the recipe
builds, summed tensor by tensor; FLOPs per image and the memory plan are there at the configured batch."""
import json
import math

import pytest
from typer.testing import CliRunner

from zeropoint.cli.main import app
from zeropoint.models.clip import init_clip
from zeropoint.models.vit import init_vit
from zeropoint.recipes import clip_contrastive, load_config, vit_classify

from tests.helpers import REPO

CONFIGS = {
    "configs/vision/vit-tiny_fashion-mnist.yaml": lambda cfg: init_vit(vit_classify.model_config(cfg), cfg.train.seed),
    "configs/vision/vit-micro_digits.yaml": lambda cfg: init_vit(vit_classify.model_config(cfg), cfg.train.seed),
    "configs/vision/clip-tiny_emoji.yaml": lambda cfg: init_clip(clip_contrastive.model_config(cfg), cfg.train.seed),
}


@pytest.mark.parametrize("path", sorted(CONFIGS))
def test_model_info_counts_the_built_model(path):
    res = CliRunner().invoke(app, ["model", "info", str(REPO / path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    cfg, _ = load_config(REPO / path)
    params = CONFIGS[path](cfg)
    assert info["params"] == sum(math.prod(t.shape) for t in params.values())
    assert info["trainable_params"] == info["params"]
    t = cfg.train
    assert (info["micro_batch_size"], info["grad_accum"], info["precision"]) == (t.micro_batch_size, t.grad_accum,
                                                                                 t.precision)
    fl = info["flops"]
    assert 0 < fl["forward_per_sample"] < fl["train_per_sample"] <= 3 * fl["forward_per_sample"]
    assert fl["per_step"] == fl["train_per_sample"] * t.micro_batch_size * t.grad_accum
    mem = info["memory"]
    assert mem["optimizer_bytes"] == 8 * info["params"] and mem["activations_bytes"] > 0
    assert mem["total_bytes"] == sum(v for k, v in mem.items() if k != "total_bytes")


def test_model_info_names_a_bad_model_config():
    res = CliRunner().invoke(app, ["model", "info", str(REPO / "configs/vision/vit-micro_digits.yaml"),
                                   "--set", "model.config=vit-nope"])
    assert res.exit_code == 2 and "unknown ViT config 'vit-nope'" in res.output and "Traceback" not in res.output
