"""vlm_finetune on real Noto emoji (category questions, a held-out split of emoji never trained on): the two
stages train, stage 2 (projector + LoRA adapters + optimizer state) resumes bit-identically from a checkpoint, and
the held-out loss needs the image (the shuffled-image control is at least 0.2 nats per reply token worse).
Stage 1's resume goes through the same save/load steps with a subset of those tensors (the projector), so it is
not run a second time here (each run() captures its jitted steps anew: ~15 s on the shared box)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner

from zeropoint.cli.main import app
from zeropoint.data.images import load_image
from zeropoint.hashing import sha256_file
from zeropoint.models.vlm import open_vlm_checkpoint

from zeropoint.checkpoint import load_checkpoint
from zeropoint.evidence import load_run, read_metrics
from zeropoint.recipes import load_config

from vision_helpers import REPO, losses, same_weights
from vlm_helpers import conversation_tokenizer, emoji_vlm_dataset

CONFIG = REPO / "configs/vlm/tiny_emoji.yaml"


def _resume_from(result: dict, step: int, cfg, run) -> dict:
    """Drop the checkpoints after `step` (the process died there) and resume the same run."""
    ckdir = load_run(result["run_id"]).checkpoints_dir
    for d in sorted(ckdir.glob("step-*")):
        if int(d.name.split("-")[1]) > step:
            shutil.rmtree(d)
    return run(cfg, progress=False, run_id=result["run_id"], resume=True)


@pytest.mark.slow
def test_two_stages_exact_resume_and_shuffled_image_control(tmp_path):
    info = emoji_vlm_dataset(tmp_path, per_category=24, tasks=("category",))
    tok = conversation_tokenizer(tmp_path / "emoji-vlm", tmp_path / "tok")
    base = [f"model.tokenizer={tok}", "eval.exact_match=false"]

    # stage 1: projector only
    cfg1, run = load_config(CONFIG, base)
    a = run(cfg1, progress=False)
    data = next(e for e in read_metrics(load_run(a["run_id"])) if e.get("event") == "data")
    assert data["heldout_images"] == info["heldout_images"] and data["train_images"] == info["images"] - data["heldout_images"]
    w1 = load_checkpoint(a["checkpoint"]).weights
    assert a["last_loss"] < a["first_loss"]
    assert a["params_trainable"] == sum(int(np.prod(v.shape)) for k, v in w1.items() if k.startswith("projector."))

    # stage 2: projector + LoRA, from stage 1's projector
    cfg2, _ = load_config(CONFIG, base + ["stage=2", f"init_from={a['checkpoint']}", "train.steps=200",
                                          "train.ckpt_every=20"])
    b = run(cfg2, progress=False)
    w2 = load_checkpoint(b["checkpoint"]).weights
    assert any(k.startswith("lm.") and "lora_B" in k for k in w2)
    assert not np.array_equal(w2["projector.fc2.w"], w1["projector.fc2.w"])
    ev = b["eval"]
    assert ev["heldout_images"] == info["heldout_images"] and ev["heldout_rows"] == info["heldout_images"]
    gap = ev["loss_shuffled"]["loss_per_token"] - ev["loss_real"]["loss_per_token"]
    assert gap >= 0.2, f"shuffled-image control only {gap:.3f} nats/token worse than real images: {ev}"
    curve2 = losses(b["run_dir"])
    b2 = _resume_from(b, 180, cfg2, run)
    assert b2["start_step"] == 180 and b2["steps_this_session"] == 20
    assert losses(b["run_dir"]) == curve2
    assert same_weights(load_checkpoint(b2["checkpoint"]).weights, w2)
    assert b2["eval"]["loss_real"] == ev["loss_real"] and b2["eval"]["loss_shuffled"] == ev["loss_shuffled"]

    _generate_from_the_checkpoint(b["checkpoint"], tmp_path / "emoji-vlm")


def _generate_from_the_checkpoint(ckpt: str, dataset: Path):
    """`zpctl generate CKPT --image PNG`: the KV-cached answer is the greedy continuation that full forwards (no
    cache) give; the run records the image's hash; a VLM checkpoint without an image is a clear error."""
    rows = [json.loads(x) for x in (dataset / "conversations.jsonl").read_text().splitlines()]
    png = dataset / next(r["image"] for r in rows if r["split"] == "heldout")
    args = ["generate", ckpt, "--image", str(png), "--prompt", "Which category?", "--max-tokens", "6"]
    res = CliRunner().invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["generated_tokens"] >= 1 and doc["image"] == str(png)
    run = load_run(doc["run_id"]).record
    assert run["status"] == "succeeded" and run["image"]["sha256"] == sha256_file(png)

    vlm = open_vlm_checkpoint(ckpt)
    x = vlm.normalize(load_image(png, vlm.tower.cfg.image_size, 3)[None])[0]
    ids, emb = vlm.prompt_embeds(x, [{"role": "user", "content": "<image>\nWhich category?"}])
    assert doc["prompt_tokens"] == len(ids)
    model, seq = vlm.lm.model, list(doc["ids"])
    for i, t in enumerate(seq):
        prev = model.embed(Tensor(np.array([seq[:i]], np.int32))).numpy()[0] if i else np.zeros((0, emb.shape[1]))
        h = model.hidden_from_embeds(Tensor(np.concatenate([emb, prev])[None].astype(np.float32)))
        assert int(model.logits_from_hidden(h)[0, -1].argmax().item()) == t, (i, seq)

    no_image = CliRunner().invoke(app, ["generate", ckpt, "--prompt", "Which category?"])
    assert no_image.exit_code == 2 and "pass --image" in no_image.output


def test_token_f1_and_bootstrap_interval():
    from zeropoint.recipes.vlm_finetune import exact_match, mean_ci, token_f1
    assert token_f1("Grinning face.", "grinning face") == 1.0
    assert token_f1("Red heart.", "Grinning face.") == 0.0
    assert abs(token_f1("flag: france", "Flag: United Kingdom.") - 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)) < 1e-12
    em = exact_match(["Flags", "Objects", "Flags", "Flags"], ["Flags", "Flags", "Flags", "Flags"], seed=0)
    assert em["accuracy"] == 0.75 and em["n"] == 4 and 0.0 <= em["ci95"][0] <= 0.75 <= em["ci95"][1] <= 1.0
    assert mean_ci([], 0)["mean"] is None and mean_ci([1.0] * 5, 0)["ci95"] == [1.0, 1.0]
