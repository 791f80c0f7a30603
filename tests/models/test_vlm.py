"""The VLM's data plumbing, without training: conversations to fixed-shape rows (image slots where `<image>`
stood, labels on the assistant reply only), the per-emoji held-out split, and reading only approved files."""
import json

import numpy as np
import pytest

from zeropoint.data import assets
from zeropoint.data.images import ImageDataError
from zeropoint.data.vlm import emoji_vlm_rows, read_vlm_jsonl
from zeropoint.hashing import sha256_file
from zeropoint.models.registry import load_tokenizer
from zeropoint.models.vlm import VisionSpec, VLMError, batch_arrays, check_tower_heldout, encode_conversation, open_vision_tower

TURNS = [{"role": "user", "content": "<image>\nWhich category?"}, {"role": "assistant", "content": "Flags"}]


def test_image_slots_and_reply_labels():
    tok = load_tokenizer("smollm2-135m")
    r = encode_conversation(tok, TURNS, 4, seq_len=64, reply_len=8)
    slots = np.nonzero(r.slots >= 0)[0]
    assert list(r.slots[slots]) == [0, 1, 2, 3] and list(np.diff(slots)) == [1, 1, 1]
    reply = r.labels[r.labels >= 0]
    assert tok.decode(reply) == "Flags<|im_end|>"
    pos = r.reply_pos[r.reply_pos >= 0]
    assert list(r.ids[pos + 1]) == list(reply)                  # position p predicts the token at p + 1
    assert tok.decode(r.ids[:pos[0] + 1]).endswith("<|im_start|>assistant\n")   # nothing before the reply is labelled
    ids, S, R, L = batch_arrays([r, r], 4)
    assert S.shape == (2, 64, 4) and S.sum() == 8 and R.shape == (2, 8, 64) and R.sum() == 2 * len(reply)

    with pytest.raises(VLMError, match="exactly once"):
        encode_conversation(tok, [{"role": "user", "content": "no image"}, TURNS[1]], 4, seq_len=64, reply_len=8)
    with pytest.raises(VLMError, match="raise data.seq_len"):
        encode_conversation(tok, TURNS, 60, seq_len=64, reply_len=8)
    with pytest.raises(VLMError, match="raise data.reply_len"):
        encode_conversation(tok, TURNS, 4, seq_len=64, reply_len=1)
    text_only = [{"role": "user", "content": "Which category?"}, TURNS[1]]
    assert (encode_conversation(tok, text_only, 4, seq_len=64, reply_len=8, image=False).slots < 0).all()


def test_the_heldout_split_is_per_emoji_and_covers_every_category():
    rows = emoji_vlm_rows(assets.emoji_google_dir() / "emoji.json", per_category=20, heldout_fraction=0.2)
    train = {r["image"] for r in rows if r["split"] == "train"}
    held = {r["image"] for r in rows if r["split"] == "heldout"}
    assert train and held and not train & held
    assert {r["label"] for r in rows if r["split"] == "heldout"} == {r["label"] for r in rows}
    assert {r["task"] for r in rows} == {"name", "category"} and len(rows) == 2 * len(train | held)
    heart = next(r for r in rows if r["task"] == "name" and "heart" in r["messages"][1]["content"].lower())
    assert heart["messages"][1]["content"][0].isupper() and heart["messages"][1]["content"].endswith(".")


def test_only_approved_images_are_read(tmp_path):
    png = sorted((assets.emoji_google_dir() / "img/google/64").glob("*.png"))[0]
    (tmp_path / "a.png").write_bytes(png.read_bytes())
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "a.png", "messages": TURNS}) + "\n")
    files = [{"path": str(tmp_path / n), "sha256": sha256_file(tmp_path / n)} for n in ("a.png", "c.jsonl")]
    read = lambda f: open(f["path"], "rb").read()   # noqa: E731
    d = read_vlm_jsonl(files, 16, read)
    assert d.images.shape == (1, 3, 16, 16) and d.rows[0]["split"] == "train"
    with pytest.raises(ImageDataError, match="not part of the approved dataset"):
        read_vlm_jsonl(files[1:], 16, read)


def test_a_clip_tower_that_trained_on_heldout_images_is_refused():
    tower = open_vision_tower(VisionSpec(config="vit-micro-8", overrides={"image_size": 16, "channels": 3}))
    assert check_tower_heldout(tower, {"1f600.png"})["checked"] is False        # a random tower: nothing to check
    tower.info = {"kind": "clip_checkpoint", "path": "/clip/step-1"}
    tower.trained_heldout = frozenset({"1f600.png", "1f601.png"})
    assert check_tower_heldout(tower, {"1f600.png"}) == {"checked": True, "heldout_images": 1, "seen_by_tower": 0}
    with pytest.raises(VLMError, match="1f602.png"):
        check_tower_heldout(tower, {"1f600.png", "1f602.png"})
