"""clip_contrastive on real Noto emoji (a caption JSONL of 48 pairs): same-seed determinism, exact resume,
retrieval / zero-shot evaluation and the model card."""
import json
import shutil

import numpy as np
import pytest

from zeropoint.checkpoint import load_checkpoint
from zeropoint.config import validate
from zeropoint.data.vlm import emoji_vlm_rows
from zeropoint.recipes.clip_contrastive import CLIPContrastiveConfig, split_pairs
from zeropoint.recipes import load_config
from zeropoint.data import assets
from zeropoint.data import images as I
from zeropoint.evidence import load_run

from vision_helpers import REPO, Crash, crash_at_batch, losses, register, same_weights


def _emoji_jsonl(root):
    recs = I.emoji_records(assets.emoji_google_dir() / "emoji.json")
    picks = [r for lab in sorted({r["label"] for r in recs}) for r in [x for x in recs if x["label"] == lab][:6]][:48]
    (root / "img").mkdir(parents=True)
    lines = []
    for r in picks:
        name = r["image"].rsplit("/", 1)[-1]
        shutil.copy(r["image"], root / "img" / name)
        lines.append(json.dumps({"image": f"img/{name}", "caption": r["caption"], "label": r["label"]}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return len(picks)


OVERRIDES = ["model.config=clip-micro", "model.vocab_size=300", "data.datasets=[emoji-mini]", "data.format=caption_jsonl",
             "data.test_fraction=0.25", "train.epochs=1", "train.micro_batch_size=8", "train.warmup_steps=0",
             "train.ckpt_every=2", "eval.batch_size=16"]


@pytest.mark.slow
def test_emoji_determinism_exact_resume_and_card(monkeypatch, tmp_path):
    n = _emoji_jsonl(tmp_path / "emoji")
    register(tmp_path / "emoji", "emoji-mini", "Apache-2.0")
    cfg, run = load_config(REPO / "configs/vision/clip-tiny_emoji.yaml", OVERRIDES)
    a = run(cfg, progress=False)
    from zeropoint.evidence import read_metrics
    data = next(e for e in read_metrics(load_run(a["run_id"])) if e["event"] == "data")
    assert data["pairs"] == n and data["train"] + data["test"] == n
    assert a["steps"] == -(-data["train"] // 8) >= 3          # one epoch of batches of 8

    orig = crash_at_batch(monkeypatch, I, 2)
    with pytest.raises(Crash):
        run(cfg, progress=False, run_id="clip-resume")
    monkeypatch.setattr(I, "batch_indices", orig)   # not undo(): that would also drop conftest's ZP_HOME
    b = run(cfg, progress=False, run_id="clip-resume", resume=True)
    assert b["start_step"] == 2
    assert losses(a["run_dir"]) == losses(b["run_dir"])
    ca, cb = load_checkpoint(a["checkpoint"]), load_checkpoint(b["checkpoint"])
    assert same_weights(ca.weights, cb.weights)
    assert a["retrieval"] == b["retrieval"]

    r = a["retrieval"]
    assert r["n"] == data["test"]
    assert r["random_baseline"]["R@10"] == min(1.0, 10 / r["n"])
    for d in ("image_to_text", "text_to_image"):
        assert 0.0 <= r[d]["R@1"] <= r[d]["R@5"] <= r[d]["R@10"] <= 1.0
    card = json.loads(ca.extra["model_card.json"])
    got = {m["name"]: m["value"] for m in card["metrics"]}
    assert got["image_to_text_R@10"] == r["image_to_text"]["R@10"] and got["zero_shot_top1"] == a["zero_shot"]["top1"]
    assert ca.extra["tokenizer.json"].decode().startswith("{")
    assert load_run(a["run_id"]).record["datasets"][0]["name"] == "emoji-mini"

    from zeropoint.models.hf_vision import load_hf_clip
    _, harr, _ = load_hf_clip(a["hf_export"])
    assert same_weights(harr, ca.weights)

    from tests.snapshots import assert_snapshot, evidence_keys
    assert_snapshot("evidence_keys_clip_contrastive.txt", evidence_keys(a["run_dir"]))


def test_emoji_vlm_split_holds_out_exactly_the_vlm_heldout_emoji():
    """`data.split: emoji_vlm` (no training): the tower's held-out emoji are the VLM dataset's, by file name."""
    ej = assets.emoji_google_dir() / "emoji.json"
    records = [{"files": [{"path": str(ej)}]}]
    labels = np.array([r["label"] for r in I.emoji_records(ej)])
    raw = {"data": {"datasets": ["emoji-google"], "split": "emoji_vlm", "test_fraction": 0.15,
                    "split_per_category": 60}}
    tr, te, names = split_pairs(validate(CLIPContrastiveConfig, raw, "t"), records, labels)
    vlm_held = {r["image"].rsplit("/", 1)[-1] for r in emoji_vlm_rows(ej, per_category=60, tasks=("category",))
                if r["split"] == "heldout"}
    assert {names[i] for i in te} == vlm_held and len(vlm_held) == 81
    assert len(tr) + len(te) == len(labels) and not set(tr) & set(te)
    raw["data"]["split"] = "stratified"        # the default split draws another held-out set
    _, te2, _ = split_pairs(validate(CLIPContrastiveConfig, raw | {"data": {**raw["data"], "split_per_category": None}},
                                     "t"), records, labels)
    assert {names[i] for i in te2} != vlm_held
    with pytest.raises(Exception, match="needs data.format emoji"):
        validate(CLIPContrastiveConfig, {"data": {"datasets": ["x"], "format": "caption_jsonl", "split": "emoji_vlm"}},
                 "t")
