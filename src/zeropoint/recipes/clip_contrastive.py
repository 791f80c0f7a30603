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

import json
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..config import StrictModel, config_dict, config_hash


class ModelSection(StrictModel):
    config: str = Field("clip-emoji-tiny", description="named config in models.clip.CLIP_CONFIGS")
    vision: dict = Field(default_factory=dict, description="ViTConfig fields to change in the image tower")
    text: dict = Field(default_factory=dict, description="TextConfig fields to change in the text tower")
    vocab_size: int = Field(1024, description="BPE vocabulary learned from the training captions")


class DataSection(StrictModel):
    dataset: str = Field(description="governed dataset name (approved with `zpctl data approve`)")
    format: Literal["emoji", "caption_jsonl"] = "emoji"
    test_fraction: float = Field(0.12, description="held-out pairs for retrieval / zero-shot evaluation")
    max_pairs: int | None = Field(None, description="use only N pairs, spread evenly over the data (tests)")
    crop_pad: int = 0
    flip: bool = False


class TrainSection(StrictModel):
    epochs: float = 20.0
    batch_size: int = 128
    grad_accum: int = 1
    lr: float = 2e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.1
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    loss_scale: float = 32768.0
    grad_clip: float = 1.0
    ckpt_every: int = 100
    keep_ckpts: int = 2
    seed: int = 0
    jit: bool = True


class EvalSection(StrictModel):
    batch_size: int = 256
    prompt: str = Field("{}", description="zero-shot prompt template; {} is the lower-cased label")
    class_prompts: dict[str, list[str]] = Field(
        default_factory=dict, description="hand-written prompts per label, averaged (CLIP-style prompt ensembling); "
                                          "reported as a second zero-shot figure next to the plain label prompts")


class CLIPContrastiveConfig(StrictModel):
    recipe: Literal["clip_contrastive"] = "clip_contrastive"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)


# ---- building blocks -----------------------------------------------------------------------------------------
def load_pairs(cfg: CLIPContrastiveConfig, records: list[dict], image_size: int):
    from ..data import images as I
    files = [f for r in records for f in r["files"]]
    if cfg.data.format == "emoji":
        ds = I.load_emoji_captions(files, image_size)
    else:
        allowed = {str(Path(f["path"])) for f in files}
        ds = I.load_caption_jsonl(I.find_file(files, ".jsonl"), image_size, 3, allowed)
    if cfg.data.max_pairs and cfg.data.max_pairs < len(ds):
        ds = ds.subset(np.linspace(0, len(ds) - 1, cfg.data.max_pairs).round().astype(np.int64))
    return ds


def make_embedders(params, mcfg, batch_size: int, dtype):
    """(embed_images, embed_ids): normalised embeddings in fixed-size batches, one TinyJit per tower, so held-out
    images, captions, label prompts and prompt ensembles all replay one captured graph (no per-call re-scheduling,
    no new kernels for each prompt count)."""
    from tinygrad import TinyJit

    from ..models.clip import encode_image, encode_text, normalize
    from ..models.vit import apply_batched
    img = TinyJit(lambda x: normalize(encode_image(params, mcfg, x, dtype=dtype)).realize())
    txt = TinyJit(lambda x: normalize(encode_text(params, mcfg, x, dtype=dtype)).realize())
    return (lambda images: apply_batched(img, images, batch_size)), (lambda ids: apply_batched(txt, ids, batch_size))


# ---- the recipe --------------------------------------------------------------------------------------------
def run(cfg: CLIPContrastiveConfig, *, allow_simulated: bool = False, run_id: str | None = None, resume: bool = False,
        progress: bool = True, command: str = "zpctl train") -> dict:
    from ..checkpoint import latest_valid, load_checkpoint, save_checkpoint
    from ..data import images as I
    from ..engine import EngineConfig, Trainer, compute_dtype, fit
    from ..errors import ZeropointError
    from ..evals import vision as V
    from ..evidence import load_run, new_run_id, start_run
    from ..governance.gate import require_approved
    from ..modelcard import VISION_RISKS, build_card, card_files
    from ..models import clip as C
    from ..models.hf_vision import save_hf_clip
    from ..models.vit import num_params
    from ..scope import require_real_compute
    from ..workspace import atomic_write_text
    from .vit_classify import load_params

    # 1. scope and governance first
    scope = require_real_compute(allow_simulated)
    from ..engine import cpu_threads, jitcache
    jitcache.enable()      # kernels an earlier run compiled load from $ZP_CACHE
    cpu_threads.enable()   # split kernels run on every core
    run_id = load_run(run_id).id if resume else (run_id or new_run_id("clip_contrastive"))
    records = require_approved([cfg.data.dataset], actor=None, purpose="clip_contrastive", run_id=run_id)
    t = cfg.train
    base = C.CLIP_CONFIGS.get(cfg.model.config)
    if base is None:
        raise ZeropointError(f"unknown CLIP config {cfg.model.config!r}; known: {', '.join(C.CLIP_CONFIGS)}")
    image_size = cfg.model.vision.get("image_size", base.vision.image_size)

    # 2. data and held-out split
    pairs = load_pairs(cfg, records, image_size)
    tr, te = I.split_indices(len(pairs), cfg.data.test_fraction, t.seed, pairs.labels)
    train, test = pairs.subset(tr), pairs.subset(te)
    mean, std = I.channel_stats(train.images)
    xtr, xte = I.normalize(train.images, mean, std), I.normalize(test.images, mean, std)

    # 3. tokenizer from the training captions only
    tok = C.train_caption_tokenizer(train.captions, cfg.model.vocab_size)
    mcfg = C.clip_config(cfg.model.config, vocab_size=tok.get_vocab_size(), bos_id=tok.token_to_id(C.BOS),
                         eos_id=tok.token_to_id(C.EOS), vision=cfg.model.vision, text=cfg.model.text)
    ctx = mcfg.text.context
    ids_tr, ids_te = C.encode_captions(tok, train.captions, ctx), C.encode_captions(tok, test.captions, ctx)
    micro, accum = min(t.batch_size, len(xtr)), t.grad_accum
    steps = max(1, math.ceil(t.epochs * len(xtr) / (micro * accum)))

    with start_run(command, cfg, kind="clip_contrastive", seed=t.seed, datasets=records, scope=scope,
                   run_id=run_id, resume=resume) as run:
        run.event("data", pairs=len(pairs), train=len(xtr), test=len(xte), labels=pairs.classes, steps=steps,
                  vocab_size=tok.get_vocab_size(), image_size=image_size,
                  truncated_captions=int(sum(len(tok.encode(c.lower()).ids) > ctx - 2 for c in pairs.captions)))

        # 4. model and engine
        params = C.init_clip(mcfg, seed=t.seed)
        dtype = compute_dtype(t.precision)
        run.event("model", config=cfg.model.config, clip=mcfg.to_dict(), params=num_params(params))

        def loss_fn(x, ids):
            img, txt = C.clip_embed(params, mcfg, x, ids, dtype=dtype)
            return C.clip_loss(params, img, txt)

        trainer = Trainer(params, loss_fn, EngineConfig(
            lr=t.lr, total_steps=steps, warmup_steps=t.warmup_steps, min_lr_ratio=t.min_lr_ratio,
            weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=accum, precision=t.precision,
            loss_scale=t.loss_scale, jit=t.jit), cache_key={"recipe": "clip_contrastive", "clip": mcfg.to_dict(),
                                                      "dtype": str(dtype)})

        # 5. resume
        start = 0
        if resume:
            path, skipped = latest_valid(run.checkpoints_dir)
            for s in skipped:
                run.event("checkpoint_rejected", **s)
            if path is not None:
                ck = load_checkpoint(path)
                if ck.manifest.get("config_sha256") != config_hash(cfg):
                    raise ZeropointError(f"{path} was written with a different config; resume needs the same config")
                if ck.extra.get("tokenizer.json", b"").decode() != tok.to_str():
                    raise ZeropointError(f"{path}: the tokenizer learned now differs from the checkpoint's; the "
                                         "training captions changed - start a new run")
                load_params(params, ck.weights)
                trainer.load_optimizer_state(ck.optimizer, ck.state["engine"])
                start = ck.step
                run.event("resumed_from", step=start, path=str(path))
            run.truncate_after(start)

        def get_batches(step: int):
            out = []
            for a in range(accum):
                k = step * accum + a
                idx = I.batch_indices(k, micro, len(xtr), t.seed)
                xb = xtr[idx]
                if cfg.data.crop_pad or cfg.data.flip:
                    xb = I.augment(xb, I.step_rng(t.seed, k), crop_pad=cfg.data.crop_pad, flip=cfg.data.flip)
                out.append((xb, ids_tr[idx]))
            return out

        def save(step: int, extra: dict | None = None) -> Path:
            arrays, scalars = trainer.optimizer_state()
            state = {"engine": scalars, "data": {"seed": t.seed, "samples_seen": step * micro * accum},
                     "normalize": {"mean": mean, "std": std}}
            return save_checkpoint(run.checkpoints_dir, step, weights={k: p.numpy() for k, p in params.items()},
                                   optimizer=arrays, state=state, config=config_dict(cfg),
                                   config_sha256=config_hash(cfg), keep=t.keep_ckpts,
                                   extra_files={"clip_config.json": _json_bytes(mcfg.to_dict()),
                                                "tokenizer.json": tok.to_str().encode(), **(extra or {})})

        t0 = time.perf_counter()
        hist = fit(trainer, get_batches, steps=steps, start_step=start, run=run, tokens_per_step=micro * accum,
                   ckpt_every=t.ckpt_every, save_ckpt=save, progress=progress,
                   description=f"{cfg.model.config} {cfg.data.dataset}")
        wall = time.perf_counter() - t0

        # 6. held-out evaluation
        te0 = time.perf_counter()
        embed_images, embed_ids = make_embedders(params, mcfg, min(cfg.eval.batch_size, len(xte)), dtype)
        img_emb = embed_images(xte)
        txt_emb = embed_ids(ids_te)
        ret = V.retrieval_recall(img_emb, txt_emb)
        prompts = [cfg.eval.prompt.format(c.lower()) for c in pairs.classes]
        cls_emb = embed_ids(C.encode_captions(tok, prompts, ctx))
        zs = V.zero_shot(img_emb, cls_emb, test.labels, pairs.classes)
        zs_brief = {k: zs[k] for k in ("top1", "top5", "chance", "majority_baseline", "n", "per_class_top1")}
        zs_ens = None
        if cfg.eval.class_prompts:
            missing = [c for c in pairs.classes if c not in cfg.eval.class_prompts]
            if missing:
                raise ZeropointError(f"eval.class_prompts has no prompts for labels {missing}; add them or remove "
                                     "eval.class_prompts")
            groups = [cfg.eval.class_prompts[c] for c in pairs.classes]
            emb = embed_ids(C.encode_captions(tok, [q for g in groups for q in g], ctx))
            ends = np.cumsum([len(g) for g in groups])
            ens = [emb[e - len(g):e].mean(0) for g, e in zip(groups, ends)]
            zs_e = V.zero_shot(img_emb, np.stack(ens), test.labels, pairs.classes)
            zs_ens = {k: zs_e[k] for k in ("top1", "top5", "chance", "majority_baseline", "n", "per_class_top1")}
        eval_s = time.perf_counter() - te0
        run.event("test_eval", retrieval=ret, zero_shot=zs_brief, zero_shot_prompt_ensemble=zs_ens, prompts=prompts,
                  eval_s=round(eval_s, 3))

        # 7. card, tokenizer, HF export
        held = f"{cfg.data.dataset} held-out {len(xte)} pairs"
        rb = ret["random_baseline"]
        metrics = [{"name": f"image_to_text_{k}", "value": ret["image_to_text"][k], "eval_set": held, "n": ret["n"],
                    "baseline": rb[k], "note": "random baseline K/N"} for k in ("R@1", "R@5", "R@10")]
        metrics += [{"name": f"text_to_image_{k}", "value": ret["text_to_image"][k], "eval_set": held, "n": ret["n"],
                     "baseline": rb[k], "note": "random baseline K/N"} for k in ("R@1", "R@5", "R@10")]
        metrics += [{"name": "zero_shot_top1", "value": zs["top1"], "eval_set": held, "n": zs["n"],
                     "baseline": zs["chance"], "note": f"{len(prompts)} labels, prompt {cfg.eval.prompt!r}; "
                                                       f"majority class {zs['majority_baseline']:.4f}"},
                    {"name": "zero_shot_top5", "value": zs["top5"], "eval_set": held, "n": zs["n"],
                     "baseline": min(1.0, 5 / len(prompts))},
                    {"name": "zero_shot_top1_prompt_ensemble", "value": zs_ens["top1"] if zs_ens else None,
                     "eval_set": held, "n": zs["n"], "baseline": zs["chance"],
                     **({"note": "hand-written prompts per label (eval.class_prompts), embeddings averaged"} if zs_ens
                        else {"null_reason": "no eval.class_prompts in the config"})}]
        card = build_card(
            name=f"{cfg.model.config}-{cfg.data.dataset}", task="image-text contrastive (retrieval, zero-shot)",
            run_id=run.id, simulated=scope.simulated, params=num_params(params), datasets=records, metrics=metrics,
            architecture={"type": "CLIP", "embed_dim": mcfg.embed_dim, "vision": mcfg.vision.to_dict(),
                          "text": {**mcfg.text.__dict__}, "tokenizer": "byte-level BPE learned from training captions"},
            training={"steps": steps, "epochs": t.epochs, "batch_size": micro * accum, "lr": t.lr,
                      "precision": t.precision, "seed": t.seed, "train_pairs": len(xtr), "train_wall_s": round(wall, 1),
                      "device": scope.device, "final_temperature": float(math.exp(params["logit_scale"].numpy()[0]))},
            intended_use=["Retrieving emoji-like pictograms from short English descriptions and back.",
                          "Zero-shot sorting of such images into broad categories from text prompts."],
            out_of_scope=["Photos of people; any identification or attribute inference about people.",
                          "Content moderation or any safety-relevant decision."],
            risks=VISION_RISKS + ["Captions are Unicode names written by a standards body; the model inherits their "
                                  "wording, including gendered and skin-tone-specific names."],
            limitations=[f"Tiny model trained on {len(xtr)} pairs at {image_size}x{image_size}; held-out captions "
                         "often contain words never seen in training, so retrieval mostly works at the level of "
                         "coarse groups (flags, faces, people).",
                         "Zero-shot prompts are label names the text tower never saw as captions."])
        hf_dir = run.dir / "hf"
        save_hf_clip(hf_dir, {k: v.numpy() for k, v in params.items()}, mcfg)
        atomic_write_text(hf_dir / "tokenizer.json", tok.to_str())
        final = save(steps, extra=card_files(card))
        steady = [h.step_s for h in hist[2:]] or [h.step_s for h in hist]
        summary = {
            "steps": steps, "steps_this_session": len(hist), "start_step": start, "epochs": t.epochs,
            "train_wall_s": round(wall, 3), "first_step_s": round(hist[0].step_s, 3) if hist else None,
            "steady_step_s": round(float(np.median(steady)), 4) if steady else None,
            "pairs_per_s": round(micro * accum / float(np.median(steady)), 1) if steady else None,
            "first_loss": hist[0].loss if hist else None, "last_loss": hist[-1].loss if hist else None,
            "retrieval": ret, "zero_shot": zs_brief, "zero_shot_prompt_ensemble": zs_ens, "eval_s": round(eval_s, 3), "checkpoint": str(final),
            "hf_export": str(hf_dir), "params": num_params(params), "params_total": num_params(params),
            "params_trainable": num_params(params),
        }
        run.update(summary=summary)
        return {"run_id": run.id, "run_dir": str(run.dir), **summary}


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
