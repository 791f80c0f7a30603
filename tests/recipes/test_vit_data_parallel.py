"""vit_classify with data parallel on 2 virtual CPU devices: 4 steps on real sklearn digits give weights within
1e-6 of one device with the same global batch (32 images, 16 per device), and the test predictions match.
lr 3e-4 for the reason given in test_data_parallel.py (Adam scales rounding noise by lr). Kernels are built with
tinygrad's NOOPT=1, as there: measured on the 2-core box the two runs took 35 s with the default kernel
optimizations and 14 s without, nearly all of it kernel lowering; the data-parallel code under test is the same."""
import json
from pathlib import Path

import numpy as np
import pytest
from tinygrad.helpers import Context

from zeropoint.checkpoint import load_checkpoint
from zeropoint.data import images as I
from zeropoint.recipes import load_config

from vision_helpers import REPO, register

OVERRIDES = ["train.epochs=1", "train.micro_batch_size=32", "data.max_train=128", "data.max_test=96",
             "train.warmup_steps=0", "train.ckpt_every=0", "train.lr=3e-4", "eval.batch_size=96",
             "model.overrides.depth=1"]


@pytest.mark.slow
def test_vit_two_devices_match_one():
    register(I.digits_csv_path(), "digits", "BSD-3-Clause")
    outs = []
    for devices in (1, 2):
        cfg, run = load_config(REPO / "configs/vision/vit-micro_digits.yaml", OVERRIDES + [f"train.devices={devices}"])
        with Context(NOOPT=1):
            outs.append(run(cfg, progress=False))
    one, two = outs
    assert one["steps"] == two["steps"] == 4
    w1, w2 = load_checkpoint(one["checkpoint"]).weights, load_checkpoint(two["checkpoint"]).weights
    diff = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
    assert 0 < diff <= 1e-6, diff
    assert two["test"]["top1"] == one["test"]["top1"]
    rec = json.loads((Path(two["run_dir"]) / "run.json").read_text())
    assert rec["devices"] == ["CPU", "CPU:1"] and rec["parallel"]["mode"] == "data_parallel"
