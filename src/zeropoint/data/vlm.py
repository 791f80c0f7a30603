"""Image-conversation data for the vision-language recipe: one JSONL row per conversation about one image.

    {"image": "img/1f600.png", "messages": [{"role": "user", "content": "<image>\\nWhat is shown?"},
     {"role": "assistant", "content": "Grinning face."}], "split": "train", "label": "Smileys & Emotion",
     "task": "name"}

`split` is "train" or "heldout" (held-out rows are never trained on); `label` and `task` are optional and
only used by evaluation (exact match on the `category` task). `write_emoji_vlm_dataset` builds such a folder
from the installed Noto emoji: two questions per emoji, the held-out split drawn per emoji (stratified by
category), so no held-out image is ever seen in training, under any question.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .images import ImageDataError, decode_image, emoji_records

QUESTIONS = {"name": "What is shown?", "category": "Which category?"}
MAX_ROWS = 1_000_000


def name_answer(caption: str) -> str:
    """'grinning face' -> 'Grinning face.'"""
    return caption[:1].upper() + caption[1:] + "."


def _by_category(recs: list[dict], per_category: int | None) -> dict[str, list[dict]]:
    by_cat: dict[str, list[dict]] = {}
    for r in recs:
        by_cat.setdefault(r["label"], []).append(r)
    return {c: by_cat[c][:per_category] if per_category else by_cat[c] for c in sorted(by_cat)}


def heldout_emoji(recs: list[dict], *, heldout_fraction: float = 0.15, seed: int = 0,
                  per_category: int | None = None) -> set[str]:
    """The image file names (e.g. '1f600.png') the emoji VLM split holds out: per category (its first
    `per_category` emoji), those whose sha256(seed:name) ranks in the lowest `heldout_fraction`. The CLIP recipe
    uses the same rule (`data.split: emoji_vlm`), so a tower trained there never sees these images either."""
    held: set[str] = set()
    if not heldout_fraction:
        return held
    for group in _by_category(recs, per_category).values():
        rank = sorted(group, key=lambda r: hashlib.sha256(f"{seed}:{Path(r['image']).name}".encode()).hexdigest())
        held |= {Path(r["image"]).name for r in rank[:max(1, round(heldout_fraction * len(group)))]}
    return held


def emoji_vlm_rows(emoji_json: Path | str, *, heldout_fraction: float = 0.15, seed: int = 0,
                   per_category: int | None = None, tasks: tuple[str, ...] = ("name", "category"),
                   system: str | None = None) -> list[dict]:
    """Rows (image path absolute) for every base emoji: 'What is shown?' -> its name, 'Which category?' -> its
    category. Per category, the emoji whose hash(seed, image) ranks in the lowest `heldout_fraction` are held out.
    `system`: a system turn first (a short one keeps rows short where the chat template would insert a long
    default, as SmolLM2's does)."""
    recs = emoji_records(emoji_json)
    held = heldout_emoji(recs, heldout_fraction=heldout_fraction, seed=seed, per_category=per_category)
    rows = []
    for cat, group in _by_category(recs, per_category).items():
        for r in group:
            answers = {"name": name_answer(r["caption"]), "category": cat}
            for task in tasks:
                answer = answers[task]
                rows.append({"image": r["image"], "label": cat, "task": task,
                             "split": "heldout" if Path(r["image"]).name in held else "train",
                             "messages": ([{"role": "system", "content": system}] if system is not None else []) +
                                         [{"role": "user", "content": f"<image>\n{QUESTIONS[task]}"},
                                          {"role": "assistant", "content": answer}]})
    return rows


def write_emoji_vlm_dataset(out_dir: Path | str, emoji_json: Path | str, *, heldout_fraction: float = 0.15,
                            seed: int = 0, per_category: int | None = None,
                            tasks: tuple[str, ...] = ("name", "category"), system: str | None = None) -> dict:
    """A dataset folder (img/*.png + conversations.jsonl) to register with `zpctl data add`. -> counts."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rows = emoji_vlm_rows(emoji_json, heldout_fraction=heldout_fraction, seed=seed, per_category=per_category,
                          tasks=tasks, system=system)
    lines = []
    for r in rows:
        name = Path(r["image"]).name
        if not (out / "img" / name).exists():
            shutil.copyfile(r["image"], out / "img" / name)
        lines.append(json.dumps({**r, "image": f"img/{name}"}, ensure_ascii=False))
    (out / "conversations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    imgs = {r["image"] for r in rows}
    held = {r["image"] for r in rows if r["split"] == "heldout"}
    return {"rows": len(rows), "images": len(imgs), "heldout_images": len(held), "dir": str(out)}


@dataclass
class VLMData:
    images: np.ndarray          # (n_images, C, H, W) float32 in [0, 1]
    image_names: list[str]
    rows: list[dict]            # {"image_index", "messages", "split", "label", "task"}
    source: str

    def split(self, name: str) -> list[dict]:
        return [r for r in self.rows if r["split"] == name]


def read_vlm_jsonl(files: list[dict], size: int, read: Callable[[dict], bytes]) -> VLMData:
    """Rows and images of a governed dataset: the one .jsonl among `files`, every image it names resolved next to
    it and required to be one of `files`; every byte through `read` (governance.gate.read_verified: re-hashed)."""
    by_path = {str(Path(f["path"])): f for f in files}
    jsonls = [f for p, f in by_path.items() if p.endswith(".jsonl")]
    if len(jsonls) != 1:
        raise ImageDataError(f"a VLM dataset has exactly one .jsonl of conversations; found {len(jsonls)}. Register "
                             "a folder holding conversations.jsonl and its images")
    jpath = Path(jsonls[0]["path"])
    rows, names, index, images = [], [], {}, []
    for i, line in enumerate(read(jsonls[0]).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) >= MAX_ROWS:
            raise ImageDataError(f"{jpath} has more than {MAX_ROWS} rows; split it into smaller datasets")
        try:
            r = json.loads(line)
        except ValueError as e:
            raise ImageDataError(f"{jpath}:{i}: not JSON ({e})") from None
        msgs = r.get("messages") if isinstance(r, dict) else None
        if not isinstance(r, dict) or not isinstance(r.get("image"), str) or not isinstance(msgs, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs):
            raise ImageDataError(f'{jpath}:{i}: each row needs "image" (a path) and "messages" (a list of '
                                 '{"role", "content"}), got ' + repr(line[:80]))
        split = r.get("split", "train")
        if split not in ("train", "heldout"):
            raise ImageDataError(f'{jpath}:{i}: "split" is {split!r}; use "train" or "heldout"')
        img = str((jpath.parent / r["image"]).resolve())
        if img not in by_path:
            raise ImageDataError(f"{jpath}:{i}: image {img} is not part of the approved dataset; register the images "
                                 "together with the JSONL (zpctl data add <folder>)")
        if img not in index:
            index[img] = len(names)
            names.append(img)
            images.append(decode_image(read(by_path[img]), size, 3, name=img))
        rows.append({"image_index": index[img], "messages": msgs, "split": split,
                     "label": str(r.get("label", "")), "task": str(r.get("task", ""))})
    if not rows:
        raise ImageDataError(f"{jpath} has no conversation rows")
    return VLMData(np.stack(images), names, rows, str(jpath))
