"""The tiny VLM on real Noto emoji, evaluated on held-out emoji: images vs the shuffled-image control vs the
text-only baseline (the same conversations with the image placeholder removed). Category questions only.

    python bench/vlm_tiny_eval.py OUT_DIR [PER_CATEGORY] [STAGE2_STEPS]
Writes OUT_DIR/vlm_tiny_eval.json. Figures go in docs/vlm.md with the machine and load."""
import json
import os
import sys
import time
from pathlib import Path

out = Path(sys.argv[1]).resolve()
out.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("ZP_HOME", str(out / "home"))
per_cat = int(sys.argv[2]) if len(sys.argv) > 2 else 60
steps2 = int(sys.argv[3]) if len(sys.argv) > 3 else 300
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/recipes"))
from vlm_helpers import conversation_tokenizer, emoji_vlm_dataset  # noqa: E402

from zeropoint.recipes import load_config  # noqa: E402

info = emoji_vlm_dataset(out, per_category=per_cat, tasks=("category",))
tok = conversation_tokenizer(out / "emoji-vlm", out / "tok")
base = [f"model.tokenizer={tok}"]
cfgp = REPO / "configs/vlm/tiny_emoji.yaml"
t0 = time.time()
cfg1, run = load_config(cfgp, base + ["eval.exact_match=false"])
s1 = run(cfg1, progress=False)
res = {"data": info, "stage1": {k: s1[k] for k in ("run_id", "first_loss", "last_loss", "train_wall_s")}}
for name, extra in (("images", []), ("text_only", ["data.drop_images=true"])):
    cfg2, _ = load_config(cfgp, base + ["stage=2", f"init_from={s1['checkpoint']}", f"train.steps={steps2}",
                                        f"train.ckpt_every={steps2}"] + extra)
    r = run(cfg2, progress=False)
    res[name] = {k: r[k] for k in ("run_id", "first_loss", "last_loss", "train_wall_s", "steady_step_s", "eval",
                                   "checkpoint")}
    print(name, json.dumps(r["eval"], default=str)[:600], flush=True)
res["wall_s"] = round(time.time() - t0, 1)
(out / "vlm_tiny_eval.json").write_text(json.dumps(res, indent=2, default=str))
print("done", res["wall_s"])
