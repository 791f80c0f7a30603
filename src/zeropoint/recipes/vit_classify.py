"""Recipe `vit_classify`: train a ViT image classifier on an approved image dataset, evaluate it, write a card.

Read top to bottom, like a torchtune recipe:
  1. refuse simulated compute, ask governance for the approved dataset (before any data is read)
  2. load images from the approved files only (IDX | sklearn digits CSV | image folder), split, normalise
  3. open the run (evidence); build the ViT from a named config + overrides, init from the seed
  4. the shared engine: AdamW on fp32 masters, precision, accumulation, clipping, warm-up + cosine, TinyJit
  5. resume: newest checkpoint that verifies; batches are a pure function of (seed, step) so resume is exact
  6. train with eval + checkpoint cadence; augmentation (random crop / flip) is drawn from (seed, step)
  7. final eval on the test split: top-1/top-5, per-class accuracy, confusion matrix PNG
  8. model card (Markdown + JSON) and the HF-layout export inside the final checkpoint; summary in run.json

    zpctl train configs/vision/vit-tiny_fashion-mnist.yaml [--set train.epochs=1]
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field
from tinygrad import TinyJit

from ..checkpoint import load_checkpoint
from ..config import BatchSize, Count, NonNegative, PositiveCount, SplitFraction, StrictModel
from ..data import images as I
from ..engine import Trainer, compute_dtype, fit
from ..errors import ConfigError
from ..evals import vision as V
from ..evidence import start_run
from ..modelcard import VISION_RISKS, build_card, card_files
from ..models.hf_vision import save_hf_vit
from ..models.vit import (
    VIT_CONFIGS,
    ViTConfig,
    apply_batched,
    classification_loss,
    init_vit,
    num_params,
    vit_config,
    vit_forward,
    vit_forward_numpy,
    vit_memory_plan,
)
from ..perf.flops import vit_flops
from ..perf.hooks import PERF_HOOKS
from . import common
from .common import ImageDataSection, VisionTrainSection


# ---- typed config (the YAML schema) ------------------------------------------------------------------------
class ModelSection(StrictModel):
    config: str = Field("vit-nano-28", description="named config in models.vit.VIT_CONFIGS")
    overrides: dict = Field(default_factory=dict, description="ViTConfig fields to change, e.g. {depth: 3}")


class DataSection(ImageDataSection):
    classes: list[str] | None = Field(None, description="class names in label order (IDX files carry none)")
    format: Literal["idx", "digits", "image_folder"] = "idx"
    image_size: Annotated[PositiveCount, Field(le=4096)] | None = Field(None, description="resize to this size; default: the model's image_size")
    test_fraction: SplitFraction = Field(0.2, description="held-out test split when the data has no test files "
                                                  "(digits, image folders)")
    val_fraction: SplitFraction = Field(0.0, description="validation split carved from train for the eval cadence")
    max_train: PositiveCount | None = Field(None, description="use only the first N training images (bounded runs, tests)")
    max_test: PositiveCount | None = Field(None, description="evaluate on only the first N test images (tests)")


class ViTTrainSection(VisionTrainSection):
    weight_decay: NonNegative = 0.05
    label_smoothing: SplitFraction = 0.0
    eval_every: Count = Field(0, description="evaluate on the validation split every N steps (0: only at the end)")


class EvalSection(StrictModel):
    batch_size: BatchSize = 500
    topk: list[Annotated[PositiveCount, Field(le=1000)]] = Field(default_factory=lambda: [1, 5])


class ViTClassifyConfig(StrictModel):
    recipe: Literal["vit_classify"] = "vit_classify"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    train: ViTTrainSection = Field(default_factory=ViTTrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)


# ---- building blocks -----------------------------------------------------------------------------------------
def model_config(cfg: ViTClassifyConfig, num_classes: int | None = None, channels: int | None = None) -> ViTConfig:
    """The ViT this config trains. Training passes the data's class count and channels; without them (sizing
    and benchmarks, before any image is read) they come from the config: `data.classes` (digits: 10), the
    format's channels (IDX and digits are grey), otherwise the named config's."""
    d, base = cfg.data, VIT_CONFIGS.get(cfg.model.config)
    if base is None:
        raise ConfigError(f"unknown ViT config {cfg.model.config!r}; known: {', '.join(VIT_CONFIGS)}")
    if num_classes is None:
        num_classes = len(d.classes) if d.classes else 10 if d.format == "digits" else base.num_classes
    if channels is None:
        channels = 1 if d.format in ("idx", "digits") else cfg.model.overrides.get("channels", base.channels)
    over = dict(cfg.model.overrides)
    over.setdefault("num_classes", num_classes)
    over.setdefault("channels", channels)
    if d.image_size:
        over.setdefault("image_size", d.image_size)
    try:
        return vit_config(cfg.model.config, **over)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.overrides {cfg.model.overrides}: {e}") from None


def model_info(cfg: ViTClassifyConfig) -> dict:
    """`zpctl model info`: parameters, FLOPs per image and the memory plan at this config's batch (no data read,
    no weights built)."""
    mcfg, t = model_config(cfg), cfg.train
    plan = vit_memory_plan(mcfg, precision=t.precision, micro_batch_size=t.micro_batch_size, grad_accum=t.grad_accum)
    return {"recipe": cfg.recipe, "model": cfg.model.config, **plan,
            "flops": vit_flops(mcfg, images_per_step=t.micro_batch_size * t.grad_accum).to_dict()}


def load_splits(cfg: ViTClassifyConfig, records: list[dict], seed: int):
    """(train, test) ImageSets from the governed files; test is the dataset's own test split when it has one."""
    files = [f for r in records for f in r["files"]]
    d = cfg.data
    if d.format == "idx":
        train, test = I.load_idx_split(files, "train", d.classes), I.load_idx_split(files, "test", d.classes)
    else:
        if d.format == "digits":
            full = I.load_digits_csv(I.find_file(files, "digits"))
        else:
            full = I.load_image_folder(files, d.image_size or 32, cfg.model.overrides.get("channels", 3))
        tr, te = I.split_indices(len(full), d.test_fraction, seed, full.labels)
        train, test = full.subset(tr), full.subset(te)
    if d.max_train:
        train = train.subset(np.arange(min(d.max_train, len(train))))
    if d.max_test:
        test = test.subset(np.arange(min(d.max_test, len(test))))
    return train, test


def make_predictor(params, mcfg, batch_size: int, dtype):
    """images -> logits, through ONE TinyJit of a fixed batch shape (the last batch padded, then trimmed): the
    validation cadence and the final test eval replay the same captured graph instead of scheduling a new one."""
    fwd = TinyJit(lambda x: vit_forward(params, mcfg, x, dtype=dtype).realize())

    def predict(images: np.ndarray) -> np.ndarray:
        if not len(images):
            return np.zeros((0, mcfg.num_classes), np.float32)
        return apply_batched(fwd, images, batch_size)
    return predict


def model_card(cfg: ViTClassifyConfig, *, run, scope, mcfg, params, records, rep: dict, classes: list[str],
               steps: int, train_images: int, wall: float) -> dict:
    """The model card: test metrics against chance and the majority class, training facts, use and risks."""
    t, d = cfg.train, cfg.data
    eval_set = f"{d.dataset} {'test split' if d.format == 'idx' else f'held-out {d.test_fraction:.0%}'}"
    metrics = [{"name": f"top{k}", "value": rep.get(f"top{k}"), "eval_set": eval_set, "n": rep["n"],
                "baseline": rep["chance_top1"] if k == 1 else min(1.0, k / len(classes)),
                **({"null_reason": rep[f"top{k}_null_reason"]} if rep.get(f"top{k}") is None else {})}
               for k in cfg.eval.topk]
    metrics.append({"name": "majority_class_baseline", "value": rep["majority_baseline"], "eval_set": eval_set,
                    "n": rep["n"]})
    return build_card(
        name=f"{cfg.model.config}-{d.dataset}", task="image classification", run_id=run.id,
        simulated=scope.simulated, architecture={"type": "ViT", **mcfg.to_dict()}, params=num_params(params),
        datasets=records, metrics=metrics,
        training={"steps": steps, "epochs": t.epochs, "batch_size": t.micro_batch_size * t.grad_accum, "lr": t.lr,
                  "precision": t.precision, "seed": t.seed, "train_images": train_images,
                  "train_wall_s": round(wall, 1), "device": scope.device},
        intended_use=[f"Classifying images like those in {d.dataset} into: {', '.join(classes)}.",
                      "A starting point for finetuning on similar small grey-scale or low-resolution images."],
        out_of_scope=["Any decision about people.", "Images unlike the training data (photos, other domains)."],
        risks=VISION_RISKS,
        limitations=[f"Trained {t.epochs} epoch(s) at {mcfg.image_size}x{mcfg.image_size}; accuracy is for the "
                     "eval set above only.",
                     "Per-class accuracy varies (see per_class_top1 in run.json and the confusion matrix)."],
        extra={"per_class_top1": rep["per_class_top1"], "confusion_matrix_png": "confusion_matrix.png"})


# ---- the recipe --------------------------------------------------------------------------------------------
def run(cfg: ViTClassifyConfig, *, allow_simulated: bool = False, run_id: str | None = None, resume: bool = False,
        progress: bool = True, command: str = "zpctl train") -> dict:
    # 1. scope and governance first
    scope, run_id, records = common.admit("vit_classify", cfg.data.datasets, allow_simulated=allow_simulated,
                                          run_id=run_id, resume=resume)
    t = cfg.train

    # 2. data, from the approved files only
    train, test = load_splits(cfg, records, t.seed)
    mcfg = model_config(cfg, len(train.classes), train.images.shape[1])
    if train.images.shape[-1] != mcfg.image_size:
        train.images, test.images = I.resize(train.images, mcfg.image_size), I.resize(test.images, mcfg.image_size)
    mean, std = I.channel_stats(train.images)
    xtr, xte = I.normalize(train.images, mean, std), I.normalize(test.images, mean, std)
    ytr, yte = train.labels, test.labels
    val_idx = None
    if cfg.data.val_fraction > 0:
        keep, val_idx = I.split_indices(len(xtr), cfg.data.val_fraction, t.seed + 1, ytr)
        xval, yval = xtr[val_idx], ytr[val_idx]
        xtr, ytr = xtr[keep], ytr[keep]
    micro, accum = t.micro_batch_size, t.grad_accum
    steps = max(1, math.ceil(t.epochs * len(xtr) / (micro * accum)))

    with start_run(command, cfg, kind="vit_classify", seed=t.seed, datasets=records, scope=scope,
                   run_id=run_id, resume=resume) as run:
        run.event("data", train=len(xtr), test=len(xte), val=0 if val_idx is None else len(val_idx),
                  classes=train.classes, image_size=mcfg.image_size, mean=mean, std=std, steps=steps)

        # 3. model; 4. engine; 5. resume
        params = init_vit(mcfg, seed=t.seed)
        dtype = compute_dtype(t.precision)
        run.event("model", config=cfg.model.config, vit=mcfg.to_dict(), params=num_params(params))

        loss_fn = classification_loss(params, mcfg, label_smoothing=t.label_smoothing, dtype=dtype)
        # warm start (engine/jitcache.py): every weight is a param; the key is what the loss computes
        trainer = Trainer(params, loss_fn, t.engine_config(total_steps=steps),
                          cache_key={"recipe": "vit_classify", "vit": mcfg.to_dict(), "dtype": str(dtype),
                                     "label_smoothing": t.label_smoothing})
        start = common.resume_from_checkpoint(run, cfg, trainer, lambda ck: common.load_arrays(
            params, ck.weights)) if resume else 0

        # 6. batches and augmentation: pure functions of (seed, step)
        get_batches = common.image_batches(xtr, lambda idx: ytr[idx].astype(np.int32), micro=micro, accum=accum,
                                    seed=t.seed, crop_pad=cfg.data.crop_pad, flip=cfg.data.flip)

        def save(step: int, extra: dict | None = None) -> Path:
            seen = step * micro * accum
            return common.save_training_state(
                run, step, cfg, trainer, weights={k: p.numpy() for k, p in params.items()},
                state={"data": {"seed": t.seed, "samples_seen": seen, "epoch": seen / len(xtr)},
                       "normalize": {"mean": mean, "std": std}, "classes": train.classes},
                extra_files={"vit_config.json": common.json_bytes(mcfg.to_dict()), **(extra or {})})

        predict = make_predictor(params, mcfg, cfg.eval.batch_size, dtype)

        def eval_fn(step: int) -> dict:
            return {"val_top1": V.topk_accuracy(predict(xval), yval, (1,))["top1"]}

        t0 = time.perf_counter()
        hist = fit(trainer, get_batches, steps=steps, start_step=start, run=run, items_per_step=micro * accum,
                   unit="images",
                   eval_every=t.eval_every, eval_fn=eval_fn if val_idx is not None else None,
                   ckpt_every=t.ckpt_every, save_ckpt=save, progress=progress, hooks=PERF_HOOKS,
                   description=f"{cfg.model.config} {cfg.data.dataset}")
        wall = time.perf_counter() - t0

        # 7. final evaluation on the test split
        te0 = time.perf_counter()
        rep = V.classification_report(predict(xte), yte, train.classes, tuple(cfg.eval.topk))
        cm_png = V.save_confusion_png(np.array(rep["confusion_matrix"]), train.classes,
                                      run.dir / "confusion_matrix.png",
                                      f"{cfg.model.config} on {cfg.data.dataset} test (n={len(yte)})")
        eval_s = time.perf_counter() - te0
        run.event("test_eval", **{k: v for k, v in rep.items() if k != "confusion_matrix"}, eval_s=round(eval_s, 3))

        # 8. model card + HF export in the final checkpoint
        card = model_card(cfg, run=run, scope=scope, mcfg=mcfg, params=params, records=records, rep=rep,
                          classes=train.classes, steps=steps, train_images=len(xtr), wall=wall)
        hf_dir = run.dir / "hf"
        save_hf_vit(hf_dir, {k: v.numpy() for k, v in params.items()}, mcfg, id2label=train.classes)
        final = save(steps, extra={**card_files(card), "confusion_matrix.png": cm_png.read_bytes(),
                                   "hf_config.json": (hf_dir / "config.json").read_bytes()})
        summary = {
            **common.throughput_summary(hist, steps=steps, start=start, wall=wall, per_step=micro * accum,
                                        unit="images"),
            "epochs": t.epochs, "test": {k: v for k, v in rep.items() if k != "confusion_matrix"},
            "eval_s": round(eval_s, 3), "confusion_matrix_png": str(cm_png), "checkpoint": str(final),
            "hf_export": str(hf_dir), "params": num_params(params), "params_total": num_params(params),
            "params_trainable": num_params(params),
        }
        run.update(summary=summary)
        return {"run_id": run.id, "run_dir": str(run.dir), **summary}


# ---- scoring a checkpoint without compiling anything ---------------------------------------------------------
def score_checkpoint(path: Path | str, images: np.ndarray, labels: np.ndarray, classes: list[str],
                     batch_size: int = 500) -> dict:
    """Score any (verified) vit_classify checkpoint on raw [0, 1] images with the float64 numpy reference
    forward: no kernels to compile, so a mid-run checkpoint can be measured while training continues."""
    ck = load_checkpoint(path)
    mcfg = ViTConfig.from_dict(json.loads(ck.extra["vit_config.json"]))
    norm = ck.state["normalize"]
    x = I.normalize(images, norm["mean"], norm["std"])
    logits = np.concatenate([vit_forward_numpy(ck.weights, mcfg, x[i:i + batch_size])
                             for i in range(0, len(x), batch_size)])
    rep = V.classification_report(logits, labels, classes)
    return {"checkpoint": str(ck.path), "step": ck.step, **{k: v for k, v in rep.items() if k != "confusion_matrix"}}
