import json
import os
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_fashion_mnist_eval_through_zpctl_eval_on_a_vit_checkpoint(tmp_path):
    """A (randomly initialised, so near-chance) one-block vit-nano-28 checkpoint evaluated on the real Fashion-MNIST test
    images; checks plumbing and that top-1/top-5 are computed from real logits, not from a fixed figure."""
    from typer.testing import CliRunner

    from zeropoint.checkpoint import save_checkpoint
    from zeropoint.cli.main import app
    from zeropoint.models.vit import init_vit_arrays, vit_config
    cfg = vit_config("vit-nano-28", depth=1)     # one block: half the kernels to compile, same plumbing
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    ck = save_checkpoint(tmp_path / "run" / "checkpoints", 1, weights=init_vit_arrays(cfg, seed=0), optimizer={},
                         state={"classes": classes, "normalize": {"mean": [0.286], "std": [0.353]}},
                         config={"recipe": "vit_classify"}, config_sha256="0" * 64,
                         extra_files={"vit_config.json": json.dumps(cfg.to_dict()).encode()})
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--task", "fashion_mnist", "--limit", "64", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    fm = res["tasks"]["fashion_mnist"]
    assert fm["n_docs"] == 64 and fm["checkpoint"] == str(ck)
    top1, top5 = fm["metrics"]["top1"]["value"], fm["metrics"]["top5"]["value"]
    assert 0.0 <= top1 <= top5 <= 1.0 and top5 > 0.2      # 5 of 10 classes: top-5 of a random model ~ 0.5
    assert fm["metrics"]["top1"]["stderr"] > 0
    samples = Path(os.environ["ZP_HOME"]) / "evals" / res["eval_id"] / "samples_fashion_mnist.jsonl"
    preds = [json.loads(l)["pred"] for l in samples.read_text().splitlines()]
    assert len(preds) == 64 and np.mean([p == json.loads(l)["label"] for p, l in
                                         zip(preds, samples.read_text().splitlines())]) == pytest.approx(top1)
