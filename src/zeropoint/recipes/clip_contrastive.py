"""Recipe `clip_contrastive`: train a CLIP-style image-text model on approved image-caption pairs.

Read top to bottom:
  1. refuse simulated compute, ask governance for the approved dataset (before any data is read)
  2. load pairs from the approved files only (emoji package | caption JSONL); split off a held-out set,
     stratified by label so every category is in both
  3. tokenizer: byte-level BPE learned from the TRAINING captions only (held-out text never shapes it)
  4. open the run; build CLIP from a named config; the shared engine trains the symmetric InfoNCE loss
  5. resume from the newest checkpoint that verifies; batches/augmentation are pure functions of (seed, step)
  6. evaluate on the held-out pairs: image->text and text->image Recall@1/5/10 against the K/N random baseline,
     and zero-shot classification into the labels from text prompts against chance and the majority class
  7. model card, tokenizer and HF-layout export inside the final checkpoint; summary in run.json

    zpctl train configs/vision/clip-tiny_emoji.yaml
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator
from tinygrad import TinyJit

from ..config import BatchSize, Epochs, NonNegative, PositiveCount, SplitFraction, StrictModel, rename_deprecated
from ..data import images as I
from ..data.vlm import heldout_emoji
from ..engine import Trainer, compute_dtype, fit
from ..errors import ConfigError, ZeropointError
from ..evals import vision as V
from ..evidence import start_run
from ..modelcard import VISION_RISKS, build_card, card_files
from ..models import clip as C
from ..models.hf_vision import save_hf_clip
from ..models.vit import apply_batched, num_params
from ..perf.flops import clip_flops
from ..perf.hooks import PERF_HOOKS
from ..workspace import atomic_write_text
from . import common
from .common import ImageDataSection, VisionTrainSection


class ModelSection(StrictModel):
    config: str = Field("clip-emoji-tiny", description="named config in models.clip.CLIP_CONFIGS")
    overrides: dict = Field(default_factory=dict, description="CLIPConfig fields to change; `vision` and `text` "
                                                              "hold the ViTConfig / TextConfig fields of each tower")
    vocab_size: Annotated[PositiveCount, Field(ge=8, le=1 << 21)] = Field(1024, description="BPE vocabulary learned from the training captions")

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, raw):
        return rename_deprecated(raw, {"vision": "overrides.vision", "text": "overrides.text"}, "model")


class DataSection(ImageDataSection):
    format: Literal["emoji", "caption_jsonl"] = "emoji"
    test_fraction: SplitFraction = Field(0.12, description="held-out pairs for retrieval / zero-shot evaluation")
    max_pairs: PositiveCount | None = Field(None, description="use only N pairs, spread evenly over the data (tests)")
    split: Literal["stratified", "emoji_vlm"] = Field(
        "stratified", description="stratified: a random held-out set per label. emoji_vlm (format emoji only): "
        "exactly the emoji the VLM dataset (data.vlm.write_emoji_vlm_dataset) holds out at heldout_fraction = "
        "test_fraction and seed = train.seed, so a tower trained here never sees the VLM's held-out images")
    split_per_category: PositiveCount | None = Field(None, description="emoji_vlm split: the per_category the VLM "
                                                     "dataset was written with (its held-out emoji depend on it)")

    @model_validator(mode="after")
    def _split(self):
        if self.split == "emoji_vlm" and (self.format != "emoji" or self.max_pairs):
            raise ValueError("data.split emoji_vlm needs data.format emoji and no data.max_pairs (the held-out "
                             "emoji are named by the VLM split rule over the whole package)")
        if self.split_per_category and self.split != "emoji_vlm":
            raise ValueError("data.split_per_category is for data.split: emoji_vlm")
        return self


class CLIPTrainSection(VisionTrainSection):
    epochs: Epochs = 20.0
    weight_decay: NonNegative = 0.1


class EvalSection(StrictModel):
    batch_size: BatchSize = 256
    prompt: str = Field("{}", description="zero-shot prompt template; {} is the lower-cased label")
    class_prompts: dict[str, list[str]] = Field(
        default_factory=dict, description="hand-written prompts per label, averaged (CLIP-style prompt ensembling); "
                                          "reported as a second zero-shot figure next to the plain label prompts")


class CLIPContrastiveConfig(StrictModel):
    recipe: Literal["clip_contrastive"] = "clip_contrastive"
    data: DataSection                  # the one required section: which approved image-caption pairs
    model: ModelSection = Field(default_factory=ModelSection)
    train: CLIPTrainSection = Field(default_factory=CLIPTrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)


# ---- building blocks -----------------------------------------------------------------------------------------
def load_pairs(cfg: CLIPContrastiveConfig, records: list[dict], image_size: int):
    files = [f for r in records for f in r["files"]]
    if cfg.data.format == "emoji":
        ds = I.load_emoji_captions(files, image_size)
    else:
        allowed = {str(Path(f["path"])) for f in files}
        ds = I.load_caption_jsonl(I.find_file(files, ".jsonl"), image_size, 3, allowed)
    if cfg.data.max_pairs and cfg.data.max_pairs < len(ds):
        ds = ds.subset(np.linspace(0, len(ds) - 1, cfg.data.max_pairs).round().astype(np.int64))
    return ds


def split_pairs(cfg: CLIPContrastiveConfig, records: list[dict], labels: np.ndarray):
    """(train, held-out) pair indices and, for the emoji package, each pair's image file name (the checkpoint
    lists the held-out ones, so a VLM using this tower can check it never saw its own held-out images)."""
    emoji = (I.emoji_records(I.find_file([f for r in records for f in r["files"]], "emoji.json"))
             if cfg.data.format == "emoji" and not cfg.data.max_pairs else None)   # load_emoji_captions' order
    names = [Path(r["image"]).name for r in emoji] if emoji else None
    if cfg.data.split == "stratified":
        return (*I.split_indices(len(labels), cfg.data.test_fraction, cfg.train.seed, labels), names)
    held = heldout_emoji(emoji, heldout_fraction=cfg.data.test_fraction, seed=cfg.train.seed,
                         per_category=cfg.data.split_per_category)
    is_held = np.array([n in held for n in names])
    return np.flatnonzero(~is_held), np.flatnonzero(is_held), names


def model_config(cfg: CLIPContrastiveConfig, tok=None) -> C.CLIPConfig:
    """The CLIP this config trains. The text tower's vocabulary is the tokenizer's; without one (sizing before
    any caption is read) it is the configured `model.vocab_size`, the most the BPE learns, with the specials
    first as `train_caption_tokenizer` places them."""
    over = dict(cfg.model.overrides)
    vocab, bos, eos = ((tok.get_vocab_size(), tok.token_to_id(C.BOS), tok.token_to_id(C.EOS)) if tok is not None
                       else (cfg.model.vocab_size, 0, 1))
    try:
        return C.clip_config(cfg.model.config, vocab_size=vocab, bos_id=bos, eos_id=eos,
                             vision=over.pop("vision", None), text=over.pop("text", None), **over)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"model.config {cfg.model.config!r} / overrides {cfg.model.overrides}: {e}") from None


def model_info(cfg: CLIPContrastiveConfig) -> dict:
    """`zpctl model info`: parameters, FLOPs per image-caption pair and the memory plan at this config's batch,
    from the config alone (no captions read, no weights built)."""
    mcfg, t = model_config(cfg), cfg.train
    plan = C.clip_memory_plan(mcfg, precision=t.precision, micro_batch_size=t.micro_batch_size,
                              grad_accum=t.grad_accum)
    fl = clip_flops(mcfg, batch=t.micro_batch_size, pairs_per_step=t.micro_batch_size * t.grad_accum)
    return {"recipe": cfg.recipe, "model": cfg.model.config, **plan, "flops": fl.to_dict(),
            "note": plan["note"] + f"; text vocabulary taken as model.vocab_size={cfg.model.vocab_size} (the BPE "
                    "learned from the captions can be smaller)"}


def make_embedders(params, mcfg, batch_size: int, dtype):
    """(embed_images, embed_ids): normalised embeddings in fixed-size batches, one TinyJit per tower, so held-out
    images, captions, label prompts and prompt ensembles all replay one captured graph (no per-call re-scheduling,
    no new kernels for each prompt count)."""
    img = TinyJit(lambda x: C.normalize(C.encode_image(params, mcfg, x, dtype=dtype)).realize())
    txt = TinyJit(lambda x: C.normalize(C.encode_text(params, mcfg, x, dtype=dtype)).realize())
    return (lambda images: apply_batched(img, images, batch_size)), (lambda ids: apply_batched(txt, ids, batch_size))


def evaluate_heldout(cfg: CLIPContrastiveConfig, params, mcfg, dtype, tok, xte, ids_te, labels, classes) -> dict:
    """Image->text and text->image Recall@K on the held-out pairs, and zero-shot classification from label
    prompts (plus hand-written prompt ensembles when the config has them)."""
    ctx = mcfg.text.context
    embed_images, embed_ids = make_embedders(params, mcfg, min(cfg.eval.batch_size, len(xte)), dtype)
    img_emb = embed_images(xte)
    ret = V.retrieval_recall(img_emb, embed_ids(ids_te))
    prompts = [cfg.eval.prompt.format(c.lower()) for c in classes]
    zs = V.zero_shot(img_emb, embed_ids(C.encode_captions(tok, prompts, ctx)), labels, classes)
    keys = ("top1", "top5", "chance", "majority_baseline", "n", "per_class_top1")
    zs_ens = None
    if cfg.eval.class_prompts:
        missing = [c for c in classes if c not in cfg.eval.class_prompts]
        if missing:
            raise ZeropointError(f"eval.class_prompts has no prompts for labels {missing}; add them or remove "
                                 "eval.class_prompts")
        groups = [cfg.eval.class_prompts[c] for c in classes]
        emb = embed_ids(C.encode_captions(tok, [q for g in groups for q in g], ctx))
        ends = np.cumsum([len(g) for g in groups])
        ens = [emb[e - len(g):e].mean(0) for g, e in zip(groups, ends)]
        zs_e = V.zero_shot(img_emb, np.stack(ens), labels, classes)
        zs_ens = {k: zs_e[k] for k in keys}
    return {"retrieval": ret, "zero_shot": zs, "zero_shot_brief": {k: zs[k] for k in keys},
            "zero_shot_prompt_ensemble": zs_ens, "prompts": prompts}


def model_card(cfg: CLIPContrastiveConfig, *, run, scope, mcfg, params, records, ev: dict, n_test: int,
               n_train: int, steps: int, wall: float, image_size: int) -> dict:
    """The model card: retrieval against the K/N random baseline, zero-shot against chance, use and risks."""
    t, ret, zs, prompts = cfg.train, ev["retrieval"], ev["zero_shot"], ev["prompts"]
    zs_ens = ev["zero_shot_prompt_ensemble"]
    held = f"{cfg.data.dataset} held-out {n_test} pairs"
    rb = ret["random_baseline"]
    metrics = [{"name": f"{d}_{k}", "value": ret[d][k], "eval_set": held, "n": ret["n"], "baseline": rb[k],
                "note": "random baseline K/N"}
               for d in ("image_to_text", "text_to_image") for k in ("R@1", "R@5", "R@10")]
    metrics += [{"name": "zero_shot_top1", "value": zs["top1"], "eval_set": held, "n": zs["n"],
                 "baseline": zs["chance"], "note": f"{len(prompts)} labels, prompt {cfg.eval.prompt!r}; "
                                                   f"majority class {zs['majority_baseline']:.4f}"},
                {"name": "zero_shot_top5", "value": zs["top5"], "eval_set": held, "n": zs["n"],
                 "baseline": min(1.0, 5 / len(prompts))},
                {"name": "zero_shot_top1_prompt_ensemble", "value": zs_ens["top1"] if zs_ens else None,
                 "eval_set": held, "n": zs["n"], "baseline": zs["chance"],
                 **({"note": "hand-written prompts per label (eval.class_prompts), embeddings averaged"} if zs_ens
                    else {"null_reason": "no eval.class_prompts in the config"})}]
    return build_card(
        name=f"{cfg.model.config}-{cfg.data.dataset}", task="image-text contrastive (retrieval, zero-shot)",
        run_id=run.id, simulated=scope.simulated, params=num_params(params), datasets=records, metrics=metrics,
        architecture={"type": "CLIP", "embed_dim": mcfg.embed_dim, "vision": mcfg.vision.to_dict(),
                      "text": {**mcfg.text.__dict__}, "tokenizer": "byte-level BPE learned from training captions"},
        training={"steps": steps, "epochs": t.epochs, "batch_size": min(t.micro_batch_size, n_train) * t.grad_accum,
                  "lr": t.lr, "precision": t.precision, "seed": t.seed, "train_pairs": n_train,
                  "train_wall_s": round(wall, 1), "device": scope.device,
                  "final_temperature": float(math.exp(params["logit_scale"].numpy()[0]))},
        intended_use=["Retrieving emoji-like pictograms from short English descriptions and back.",
                      "Zero-shot sorting of such images into broad categories from text prompts."],
        out_of_scope=["Photos of people; any identification or attribute inference about people.",
                      "Content moderation or any safety-relevant decision."],
        risks=VISION_RISKS + ["Captions are Unicode names written by a standards body; the model inherits their "
                              "wording, including gendered and skin-tone-specific names."],
        limitations=[f"Tiny model trained on {n_train} pairs at {image_size}x{image_size}; held-out captions "
                     "often contain words never seen in training, so retrieval mostly works at the level of "
                     "coarse groups (flags, faces, people).",
                     "Zero-shot prompts are label names the text tower never saw as captions."])


# ---- the recipe --------------------------------------------------------------------------------------------
def run(cfg: CLIPContrastiveConfig, *, allow_simulated: bool = False, run_id: str | None = None, resume: bool = False,
        progress: bool = True, command: str = "zpctl train") -> dict:
    # 1. scope and governance first
    scope, run_id, records = common.admit("clip_contrastive", cfg.data.datasets, allow_simulated=allow_simulated,
                                   run_id=run_id, resume=resume)
    t = cfg.train
    base = C.CLIP_CONFIGS.get(cfg.model.config)
    if base is None:
        raise ZeropointError(f"unknown CLIP config {cfg.model.config!r}; known: {', '.join(C.CLIP_CONFIGS)}")
    image_size = (cfg.model.overrides.get("vision") or {}).get("image_size", base.vision.image_size)

    # 2. data and held-out split
    pairs = load_pairs(cfg, records, image_size)
    tr, te, names = split_pairs(cfg, records, pairs.labels)
    train, test = pairs.subset(tr), pairs.subset(te)
    mean, std = I.channel_stats(train.images)
    xtr, xte = I.normalize(train.images, mean, std), I.normalize(test.images, mean, std)

    # 3. tokenizer from the training captions only
    tok = C.train_caption_tokenizer(train.captions, cfg.model.vocab_size)
    mcfg = model_config(cfg, tok)
    ctx = mcfg.text.context
    ids_tr, ids_te = C.encode_captions(tok, train.captions, ctx), C.encode_captions(tok, test.captions, ctx)
    micro, accum = min(t.micro_batch_size, len(xtr)), t.grad_accum
    steps = max(1, math.ceil(t.epochs * len(xtr) / (micro * accum)))

    with start_run(command, cfg, kind="clip_contrastive", seed=t.seed, datasets=records, scope=scope,
                   run_id=run_id, resume=resume) as run:
        run.event("data", pairs=len(pairs), train=len(xtr), test=len(xte), split=cfg.data.split, labels=pairs.classes,
                  steps=steps,
                  vocab_size=tok.get_vocab_size(), image_size=image_size,
                  truncated_captions=int(sum(len(tok.encode(c.lower()).ids) > ctx - 2 for c in pairs.captions)))

        # 4. model and engine
        params = C.init_clip(mcfg, seed=t.seed)
        dtype = compute_dtype(t.precision)
        run.event("model", config=cfg.model.config, clip=mcfg.to_dict(), params=num_params(params))

        # warm start (engine/jitcache.py): every weight is a param; the key is what the loss computes
        trainer = Trainer(params, C.contrastive_loss(params, mcfg, dtype), t.engine_config(total_steps=steps),
                          cache_key={"recipe": "clip_contrastive", "clip": mcfg.to_dict(), "dtype": str(dtype)})
        if trainer.place.devices:   # the contrastive loss compares across the whole batch: not tested split yet
            raise ConfigError("clip_contrastive does not support train.devices > 1 yet; set train.devices: 1 "
                              "(data parallel runs the llm_finetune and vit_classify recipes)")
        common.place_model(run, trainer)

        # 5. resume (the tokenizer learned now must be the checkpoint's); batches: pure functions of (seed, step)
        def load_weights(ck):
            if ck.extra.get("tokenizer.json", b"").decode() != tok.to_str():
                raise ZeropointError(f"{ck.path}: the tokenizer learned now differs from the checkpoint's; the "
                                     "training captions changed - start a new run")
            common.load_arrays(params, ck.weights)
        start = common.resume_from_checkpoint(run, cfg, trainer, load_weights) if resume else 0
        get_batches = common.image_batches(xtr, lambda idx: ids_tr[idx], micro=micro, accum=accum, seed=t.seed,
                                    crop_pad=cfg.data.crop_pad, flip=cfg.data.flip)

        def save(step: int, extra: dict | None = None) -> Path:
            return common.save_training_state(
                run, step, cfg, trainer, weights={k: p.numpy() for k, p in params.items()},
                state={"data": {"seed": t.seed, "samples_seen": step * micro * accum},
                       "normalize": {"mean": mean, "std": std},
                       "split": {"rule": cfg.data.split,
                                 "heldout_images": [names[i] for i in te] if names else None}},
                extra_files={"clip_config.json": common.json_bytes(mcfg.to_dict()),
                             "tokenizer.json": tok.to_str().encode(), **(extra or {})})

        t0 = time.perf_counter()
        hist = fit(trainer, get_batches, steps=steps, start_step=start, run=run, items_per_step=micro * accum,
                   unit="images",
                   ckpt_every=t.ckpt_every, save_ckpt=save, progress=progress, hooks=PERF_HOOKS,
                   description=f"{cfg.model.config} {cfg.data.dataset}")
        wall = time.perf_counter() - t0

        # 6. held-out evaluation
        te0 = time.perf_counter()
        ev = evaluate_heldout(cfg, params, mcfg, dtype, tok, xte, ids_te, test.labels, pairs.classes)
        eval_s = time.perf_counter() - te0
        run.event("test_eval", retrieval=ev["retrieval"], zero_shot=ev["zero_shot_brief"],
                  zero_shot_prompt_ensemble=ev["zero_shot_prompt_ensemble"], prompts=ev["prompts"],
                  eval_s=round(eval_s, 3))

        # 7. card, tokenizer, HF export
        card = model_card(cfg, run=run, scope=scope, mcfg=mcfg, params=params, records=records, ev=ev,
                          n_test=len(xte), n_train=len(xtr), steps=steps, wall=wall, image_size=image_size)
        hf_dir = run.dir / "hf"
        save_hf_clip(hf_dir, {k: v.numpy() for k, v in params.items()}, mcfg)
        atomic_write_text(hf_dir / "tokenizer.json", tok.to_str())
        final = save(steps, extra=card_files(card))
        summary = {
            **common.throughput_summary(hist, steps=steps, start=start, wall=wall, per_step=micro * accum,
                                        unit="pairs"),
            "epochs": t.epochs, "retrieval": ev["retrieval"], "zero_shot": ev["zero_shot_brief"],
            "zero_shot_prompt_ensemble": ev["zero_shot_prompt_ensemble"], "eval_s": round(eval_s, 3),
            "checkpoint": str(final), "hf_export": str(hf_dir), "params": num_params(params),
            "params_total": num_params(params), "params_trainable": num_params(params),
        }
        run.update(summary=summary)
        return {"run_id": run.id, "run_dir": str(run.dir), **summary}
