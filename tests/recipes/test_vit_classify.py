"""vit_classify on real sklearn digits: same-seed determinism, exact resume after a crash, evaluation
artifacts (top-1/top-5, confusion PNG, model card, HF export) and the governance gate."""
import json

import pytest

from zeropoint.checkpoint import load_checkpoint
from zeropoint.recipes import load_config
from zeropoint.data import images as I
from zeropoint.evidence import load_run
from zeropoint.governance.manifest import NotApproved

from vision_helpers import REPO, Crash, crash_at_batch, losses, register, same_weights

# 4 steps of the digits config's own model, batch and eval shape: tinygrad keeps what it scheduled and compiled
# for a graph in the process, so the full training run below (same graphs, same pytest worker under
# --dist loadfile) reuses them instead of building and compiling its own first step. depth=2 is the config's own
# depth, spelled out so the evidence keys keep `model.overrides`.
OVERRIDES = ["train.epochs=1", "data.max_train=512", "data.max_test=96", "train.warmup_steps=0",
             "train.ckpt_every=2", "train.lr=0.003", "model.overrides.depth=2"]


def _cfg(extra=()):
    return load_config(REPO / "configs/vision/vit-micro_digits.yaml", OVERRIDES + list(extra))


def test_refuses_unapproved_data():
    from zeropoint.governance.manifest import add_dataset
    add_dataset(I.digits_csv_path(), "digits", "BSD-3-Clause", "public")
    cfg, run = _cfg()
    with pytest.raises(NotApproved, match="digits"):
        run(cfg, progress=False)


@pytest.mark.slow
def test_digits_determinism_exact_resume_and_artifacts(monkeypatch, tmp_path):
    register(I.digits_csv_path(), "digits", "BSD-3-Clause")
    cfg, run = _cfg()
    a = run(cfg, progress=False)
    assert a["steps"] == 4 and a["steps_this_session"] == 4

    # same seed, new run, crashed during step 3 (after the step-2 checkpoint), then resumed
    orig = crash_at_batch(monkeypatch, I, 2)
    with pytest.raises(Crash):
        run(cfg, progress=False, run_id="vit-resume")
    assert load_run("vit-resume").record["status"] == "failed"
    monkeypatch.setattr(I, "batch_indices", orig)   # not undo(): that would also drop conftest's ZP_HOME
    b = run(cfg, progress=False, run_id="vit-resume", resume=True)
    assert b["start_step"] == 2 and b["steps_this_session"] == 2

    la, lb = losses(a["run_dir"]), losses(b["run_dir"])
    assert [s for s, _ in lb] == [1, 2, 3, 4]
    assert la == lb                                    # bit-identical loss curve across runs and the resume
    assert len({round(v, 6) for _, v in la}) == 4      # four different batches, not one replayed batch
    ca, cb = load_checkpoint(a["checkpoint"]), load_checkpoint(b["checkpoint"])
    assert same_weights(ca.weights, cb.weights) and same_weights(ca.optimizer, cb.optimizer)
    assert a["test"]["top1"] == b["test"]["top1"]

    # evaluation artifacts are real and in the final checkpoint
    t = a["test"]
    assert t["n"] == 96 and 0.0 <= t["top1"] <= t["top5"] <= 1.0 and len(t["per_class_top1"]) == 10
    png = (ca.path / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads(ca.extra["model_card.json"])
    names = {m["name"]: m for m in card["metrics"]}
    assert names["top1"]["value"] == t["top1"] and names["top1"]["baseline"] == 0.1
    assert card["data"][0]["name"] == "digits" and card["data"][0]["license"] == "BSD-3-Clause"
    assert "biometric" in ca.extra["MODEL_CARD.md"].decode()
    rec = load_run(a["run_id"]).record
    assert rec["datasets"][0]["sha256"] == card["data"][0]["sha256"] and rec["status"] == "succeeded"

    # the numpy reference forward scores the checkpoint exactly as the tinygrad eval did
    from zeropoint.recipes.vit_classify import load_splits, score_checkpoint
    _, test = load_splits(cfg, rec["datasets"], cfg.train.seed)
    s = score_checkpoint(ca.path, test.images, test.labels, test.classes)
    assert s["top1"] == t["top1"] and s["top5"] == t["top5"]

    # the HF export holds the trained weights under transformers' names
    from zeropoint.models.hf_vision import load_hf_vit
    hcfg, harr, hconf = load_hf_vit(a["hf_export"])
    assert same_weights(harr, ca.weights) and hconf["id2label"]["3"] == "3"

    from tests.snapshots import assert_snapshot, evidence_keys
    assert_snapshot("evidence_keys_vit_classify.txt", evidence_keys(a["run_dir"]))


@pytest.mark.slow
def test_digits_config_learns_the_digits():
    """The `make demo-vision` config, unchanged, on the real sklearn digits: at least 95% top-1 on the 359
    held-out images (an accuracy gate, not a time gate; docs/vision.md has the measured figure and time)."""
    register(I.digits_csv_path(), "digits", "BSD-3-Clause")
    cfg, run = load_config(REPO / "configs/vision/vit-micro_digits.yaml")
    out = run(cfg, progress=False)
    t = out["test"]
    assert t["n"] == 359 and out["steps"] == 338
    assert t["top1"] >= 0.95, f"digits top-1 {t['top1']:.4f} < 0.95"
    assert min(t["per_class_top1"].values()) >= 0.8     # no digit left behind by a good average
    assert out["last_loss"] < out["first_loss"]
