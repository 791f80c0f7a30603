"""Recipe `vlm_finetune`: a LLaVA-style vision-language model, image in, text out, on the shared engine.

Read top to bottom:
  1. refuse simulated compute, ask governance for the approved dataset (before any image or caption is read)
  2. read the conversations and images from the approved files only, each file re-hashed as it is read
  3. build: the language model (frozen base; stage 2 adds LoRA adapters), the image tower (a clip_contrastive
     checkpoint's, or a named ViT; frozen unless vision.trainable) and the MLP projector. Stage 2 starts its
     projector (and tower) from the stage-1 checkpoint named by `init_from`
  4. encode every conversation: chat template, the `<image>` placeholder expanded to the tower's patch tokens,
     labels on the assistant replies only; fixed shapes (data.seq_len, data.reply_len)
  5. the engine: AdamW on fp32 masters, accumulation, precision, clipping; batches are pure functions of
     (seed, step), so a resumed run sees the batches it would have
  6. resume from the newest checkpoint that verifies
  7. held-out evaluation on emoji never trained on: loss per reply token with the real images and with the
     images permuted across the held-out set (the shuffled-image control), category exact-match against chance
     and the majority class with a bootstrap 95% CI
  8. model card in the final checkpoint; summary in run.json

    zpctl train configs/vlm/smollm2-135m_clip-emoji.yaml --set vision.checkpoint=<clip_contrastive checkpoint>
    zpctl train configs/vlm/smollm2-135m_clip-emoji.yaml --set stage=2 --set init_from=<stage-1 checkpoint> ...
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator
from tinygrad import Tensor, TinyJit

from ..checkpoint import load_checkpoint
from ..config import BatchSize, Count, DatasetName, LearningRate, PositiveCount, SeqLen, StrictModel
from ..data import images as I
from ..data.vlm import VLMData, read_vlm_jsonl
from ..engine import Trainer, fit, precision_context
from ..engine.train_section import TrainSection
from ..errors import ConfigError, ZeropointError
from ..evidence import start_run
from ..governance.gate import read_verified
from ..modelcard import LLM_RISKS, VISION_RISKS, build_card, card_files
from ..models.generate import greedy_batch
from ..models.llama import bound_tensors, cache_key, param_count
from ..models.llm import LLMSpec
from ..models.lora import LoRASpec
from ..models.vit import num_params
from ..models.vlm import (
    IMAGE,
    VisionSpec,
    VisionTower,
    batch_arrays,
    build_vlm_lm,
    check_tower_heldout,
    encode_conversation,
    init_projector,
    open_vision_tower,
    spliced_embeds,
    vlm_loss,
    vlm_token_nll,
)
from ..perf.hooks import PERF_HOOKS
from . import common


# ---- typed config (the YAML schema) ------------------------------------------------------------------------
class LoraSection(StrictModel):
    rank: Annotated[PositiveCount, Field(le=65536)] = 8
    alpha: Annotated[float, Field(gt=0, le=1e6)] = 16.0
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class DataSection(StrictModel):
    datasets: list[DatasetName] = Field(min_length=1, max_length=1, description="the governed conversation dataset "
                                "(a folder with one .jsonl and its images, approved with `zpctl data approve`)")
    seq_len: SeqLen = Field(96, description="prompt + image tokens + reply, padded to this length")
    reply_len: Annotated[PositiveCount, Field(le=4096)] = Field(16, description="most assistant tokens per row")
    max_rows: PositiveCount | None = Field(None, description="use only the first N training rows (tests)")
    drop_images: bool = Field(False, description="the text-only baseline: the same conversations with the image "
                                                 "placeholder removed, so nothing of the image reaches the model")


class VLMTrainSection(TrainSection):
    steps: PositiveCount = 100
    micro_batch_size: BatchSize = 8
    lr: LearningRate = 1e-3
    warmup_steps: Count = 5
    ckpt_every: Count = 50


class EvalSection(StrictModel):
    batch_size: BatchSize = 16
    max_new_tokens: Annotated[PositiveCount, Field(le=256)] = 8
    exact_match: bool = Field(True, description="greedy-decode the held-out category questions and score them")


class VLMFinetuneConfig(StrictModel):
    recipe: Literal["vlm_finetune"] = "vlm_finetune"
    stage: Literal[1, 2] = Field(1, description="1: projector only; 2: projector + LM LoRA (+ tower if trainable)")
    init_from: str | None = Field(None, description="stage 2: the stage-1 checkpoint its projector starts from")
    model: LLMSpec
    vision: VisionSpec
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: VLMTrainSection = Field(default_factory=VLMTrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="after")
    def _stages(self):
        if self.stage == 1 and self.init_from:
            raise ValueError("init_from is for stage 2 (it loads a stage-1 projector); drop it or set stage: 2")
        if self.stage == 1 and self.vision.trainable:
            raise ValueError("stage 1 trains the projector only; vision.trainable is a stage-2 option")
        return self


# ---- building blocks -----------------------------------------------------------------------------------------
def lora_spec(cfg: VLMFinetuneConfig) -> LoRASpec:
    return LoRASpec(rank=cfg.lora.rank, alpha=cfg.lora.alpha, targets=list(cfg.lora.targets))


def start_from_stage1(cfg: VLMFinetuneConfig, tower: VisionTower, projector: dict) -> dict:
    """Stage 2: the projector (and tower) trained by stage 1, from its verified checkpoint."""
    ck = load_checkpoint(cfg.init_from)
    if ck.config.get("recipe") != "vlm_finetune" or ck.config.get("stage") != 1:
        raise ConfigError(f"init_from {cfg.init_from} is not a vlm_finetune stage-1 checkpoint")
    if ck.config.get("model") != cfg.model.model_dump():
        raise ConfigError(f"init_from {cfg.init_from} was trained with model {ck.config.get('model')}; this config "
                          f"has {cfg.model.model_dump()}: use the same language model in both stages")
    common.load_arrays({**tower.params, **projector}, {k: v for k, v in ck.weights.items()
                                                       if k.startswith(("visual.", "projector."))})
    meta = json.loads(ck.extra["vlm.json"])
    tower.mean, tower.std = meta["mean"], meta["std"]
    return {"path": str(Path(cfg.init_from).resolve()), "step": ck.step}


def encode_rows(cfg: VLMFinetuneConfig, tok, rows: list[dict], n_img: int):
    def turns(msgs):   # the text-only baseline: the placeholder (and the newline after it) removed
        return [{**m, "content": m["content"].replace(IMAGE + "\n", "").replace(IMAGE, "")} for m in msgs] \
            if cfg.data.drop_images else msgs
    return [encode_conversation(tok, turns(r["messages"]), n_img, seq_len=cfg.data.seq_len,
                                reply_len=cfg.data.reply_len, where=f"row {i}", image=not cfg.data.drop_images)
            for i, r in enumerate(rows)]


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation with no fixed point: every image is replaced by another one (the shuffled control)."""
    if n < 2:
        return np.arange(n)
    order = np.random.default_rng([seed, 2626]).permutation(n)
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, 1)
    return perm


def heldout_nll(nll_fn, images: np.ndarray, enc, img_idx: np.ndarray, n_img: int, batch: int, precision: str) -> dict:
    """Sum and mean of the per-token NLL over every held-out reply token (padding rows are label -1)."""
    jit = TinyJit(lambda *b: nll_fn(*b).realize())
    total, count = 0.0, 0
    with precision_context(precision):
        for s in range(0, len(enc), batch):
            idx = list(range(s, min(s + batch, len(enc))))
            rows = [enc[i] for i in idx] + [enc[idx[-1]]] * (batch - len(idx))
            ids, slots, reply, labels = batch_arrays(rows, n_img)
            labels[len(idx):] = -1
            x = images[img_idx[[*idx] + [idx[-1]] * (batch - len(idx))]]
            out = jit(*[Tensor(a).realize() for a in (x, ids, slots, reply, labels)]).numpy()
            total += float(out[labels >= 0].sum())
            count += int((labels >= 0).sum())
    return {"nll_sum": total, "tokens": count, "loss_per_token": total / max(count, 1)}


def greedy_answers(model, tower, params, tok, images, enc, img_idx, n_img, batch, max_new) -> list[str]:
    """Greedy answers to held-out prompts (the context before each row's first reply token), decoded in batches
    of prompts that share one length (the same question about different images), in row order."""
    emb = TinyJit(lambda x, i, s: spliced_embeds(model, tower, params, x, i, s).realize())
    out: dict[int, str] = {}
    lengths = [int(r.reply_pos[0]) + 1 for r in enc]
    for n in sorted(set(lengths)):
        group = [i for i, m in enumerate(lengths) if m == n]
        for s in range(0, len(group), batch):
            idx = group[s:s + batch]
            idx_p = idx + [idx[-1]] * (batch - len(idx))
            ids, slots, _, _ = batch_arrays([enc[i] for i in idx_p], n_img)
            e = emb(*[Tensor(a).realize() for a in (images[img_idx[idx_p]], ids, slots)]).numpy()[:, :n]
            for i, g in zip(idx, greedy_batch(model, e, max_new, tok.stop_ids())):
                out[i] = tok.decode(g).strip()
    return [out[i] for i in range(len(enc))]


def mean_ci(values: list[float], seed: int, n_boot: int = 2000) -> dict:
    """Mean and its percentile-bootstrap 95% interval (rows resampled)."""
    if not values:
        return {"mean": None, "ci95": [None, None], "n": 0}
    v = np.asarray(values, np.float64)
    means = v[np.random.default_rng([seed, 95]).integers(0, len(v), (n_boot, len(v)))].mean(1)
    return {"mean": float(v.mean()), "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "n": len(v)}


def exact_match(pred: list[str], gold: list[str], seed: int) -> dict:
    m = mean_ci([float(p == g) for p, g in zip(pred, gold)], seed)
    return {"accuracy": m["mean"], "ci95": m["ci95"], "n": m["n"]}


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def token_f1(pred: str, gold: str) -> float:
    """SQuAD-style token F1: lower-cased words, punctuation dropped, bag-of-words overlap."""
    p, g = _words(pred), _words(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(p == g)
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def model_card(cfg, *, run, scope, params_total, datasets, ev, steps, tower) -> dict:
    held = f"{cfg.data.datasets[0]} held-out split ({ev['heldout_images']} images never trained on)"
    real, shuf = ev["loss_real"], ev["loss_shuffled"]
    metrics = [{"name": "heldout_loss_per_token", "value": real["loss_per_token"], "eval_set": held,
                "n": real["tokens"], "baseline": shuf["loss_per_token"],
                "note": "baseline: the shuffled-image control (images permuted across the held-out set)"}]
    em = ev.get("category_exact_match")
    if em and em.get("accuracy") is not None:
        metrics += [{"name": "category_exact_match", "value": em["accuracy"], "eval_set": held, "n": em["n"],
                     "baseline": ev["category_chance"],
                     "note": f"bootstrap 95% CI {em['ci95']}; chance 1/{ev['n_categories']}, majority class "
                             f"{ev['category_majority']:.4f}; shuffled-image control "
                             f"{ev['category_exact_match_shuffled']['accuracy']}"}]
    else:
        metrics += [{"name": "category_exact_match", "value": None, "eval_set": held,
                     "null_reason": "no held-out category rows, or eval.exact_match is off"}]
    f1 = ev.get("name_token_f1")
    metrics += [{"name": "name_token_f1", "value": f1["mean"], "eval_set": held, "n": f1["n"],
                 "baseline": ev["name_token_f1_shuffled"]["mean"],
                 "note": f"'What is shown?' answers vs the emoji names; bootstrap 95% CI {f1['ci95']}; baseline: the "
                         "shuffled-image control"} if f1 else
                {"name": "name_token_f1", "value": None, "eval_set": held,
                 "null_reason": "no held-out name rows, or eval.exact_match is off"}]
    metrics += [{"name": "category_exact_match_text_only", "value": None, "eval_set": held,
                 "null_reason": "the text-only baseline is a separate run of this recipe (not run here)"}]
    return build_card(
        name=f"{cfg.model.config}-vlm-stage{cfg.stage}-{run.id}", task="image-conditioned text generation (VLM)",
        run_id=run.id, simulated=scope.simulated, params=params_total, datasets=datasets, metrics=metrics,
        architecture={"type": "LLaVA-style", "lm": cfg.model.config, "vision": tower.cfg.to_dict(),
                      "vision_source": tower.info, "projector": "Linear-GELU-Linear",
                      "image_tokens": tower.n_tokens, "feature_layer": tower.feature_layer},
        training={"stage": cfg.stage, "steps": steps, "lr": cfg.train.lr, "micro_batch_size": cfg.train.micro_batch_size,
                  "grad_accum": cfg.train.grad_accum, "precision": cfg.train.precision, "seed": cfg.train.seed,
                  "init_from": cfg.init_from, "lora": cfg.lora.model_dump() if cfg.stage == 2 else None},
        intended_use=["Answering short questions about emoji-like pictograms (what is shown, which category)."],
        out_of_scope=["Photos of people; identification or attribute inference about people.",
                      "Any safety-relevant decision."],
        risks=VISION_RISKS + LLM_RISKS,
        limitations=[f"Evaluated on {ev['heldout_rows']} held-out conversations of one dataset only."])


# ---- the recipe --------------------------------------------------------------------------------------------
def run(cfg: VLMFinetuneConfig, *, allow_simulated: bool = False, run_id: str | None = None, resume: bool = False,
        progress: bool = True, command: str = "zpctl train") -> dict:
    # 1. scope and governance first
    scope, run_id, records = common.admit("vlm_finetune", cfg.data.datasets, allow_simulated=allow_simulated,
                                          run_id=run_id, resume=resume, purpose=f"vlm_finetune:stage{cfg.stage}")
    t = cfg.train

    # 3. (the tower first: its image size decides how images are decoded) tower, projector, language model
    tower = open_vision_tower(cfg.vision, seed=t.seed)

    # 2. data: conversations and images, every byte re-hashed as it is read
    files = [f for r in records for f in r["files"]]
    data: VLMData = read_vlm_jsonl(files, tower.cfg.image_size, read_verified)
    train_rows, held_rows = data.split("train"), data.split("heldout")
    if cfg.data.max_rows:
        train_rows = train_rows[:cfg.data.max_rows]
    if not train_rows:
        raise ZeropointError(f"{data.source} has no training rows (split: train)")

    lm, adapters = build_vlm_lm(cfg.model, cfg.stage, lora_spec(cfg), t.seed, precision=t.precision)
    model, tok = lm.model, lm.tokenizer
    projector = init_projector(tower.cfg.dim, lm.config.dim, seed=t.seed)
    stage1 = start_from_stage1(cfg, tower, projector) if cfg.init_from else None
    if cfg.stage == 2 and stage1 is None:
        raise ConfigError("stage 2 starts from a stage-1 projector: set init_from to a stage-1 checkpoint")
    if tower.mean is None:      # a fresh tower: normalise by the training images' channel statistics
        train_imgs = sorted({r["image_index"] for r in train_rows})
        tower.mean, tower.std = I.channel_stats(data.images[train_imgs])
    images = I.normalize(data.images, tower.mean, tower.std)
    params = {**projector, **adapters, **(tower.params if cfg.vision.trainable else {})}
    vision_params = {**tower.params, **projector}

    # 4. encoded rows (fixed shapes)
    n_img = tower.n_tokens
    enc_tr = encode_rows(cfg, tok, train_rows, n_img)
    enc_te = encode_rows(cfg, tok, held_rows, n_img)
    img_tr = np.array([r["image_index"] for r in train_rows])
    img_te = np.array([r["image_index"] for r in held_rows])
    micro, accum = min(t.micro_batch_size, len(enc_tr)), t.grad_accum
    held_imgs = sorted(set(img_te.tolist()))
    train_imgs_set = set(img_tr.tolist())
    if train_imgs_set & set(held_imgs):
        raise ZeropointError(f"{data.source}: {len(train_imgs_set & set(held_imgs))} images are in both splits; the "
                             "held-out split must hold images never trained on")
    tower_heldout = check_tower_heldout(tower, {Path(data.image_names[i]).name for i in held_imgs})

    with start_run(command, cfg, kind="vlm_finetune", seed=t.seed, datasets=records, scope=scope,
                   run_id=run_id, resume=resume) as run:
        params_total = num_params(vision_params) + param_count(lm.config) + num_params(adapters)
        run.event("data", rows=len(data.rows), train_rows=len(enc_tr), heldout_rows=len(enc_te),
                  train_images=len(train_imgs_set), heldout_images=len(held_imgs), image_tokens=n_img,
                  longest=max(r.n for r in enc_tr + enc_te), seq_len=cfg.data.seq_len)
        run.event("model", lm=cfg.model.config, weights=cfg.model.weights, stage=cfg.stage, vision=tower.info,
                  tower_heldout=tower_heldout,
                  params_total=params_total, params_trainable=num_params(params), init_from=stage1)

        # 5. engine; batches: pure functions of (seed, micro-batch number)
        loss_fn = vlm_loss(model, tower, vision_params)
        # warm start (engine/jitcache.py): the next process (a resume) replays the stored steps without capturing
        trainable = {id(v) for v in params.values()}
        frozen = {f"lm.{k}": v for k, v in bound_tensors(model).items() if id(v) not in trainable} | \
            {k: v for k, v in vision_params.items() if id(v) not in trainable}
        key = {"recipe": "vlm_finetune", **cache_key(model), "stage": cfg.stage, "vision": tower.cfg.to_dict(),
               "feature_layer": tower.feature_layer, "trainable_vision": cfg.vision.trainable,
               "lora": asdict(lora_spec(cfg)) if cfg.stage == 2 else None}
        trainer = Trainer(params, loss_fn, t.engine_config(total_steps=t.steps), frozen=frozen, cache_key=key)
        if trainer.place.devices:   # image features and the spliced prompt are not split across devices yet
            raise ConfigError("vlm_finetune does not support train.devices > 1 yet; set train.devices: 1 "
                              "(data parallel runs the llm_finetune and vit_classify recipes)")

        def get_batches(step: int) -> list:
            out = []
            for a in range(accum):
                idx = I.batch_indices(step * accum + a, micro, len(enc_tr), t.seed)
                out.append((images[img_tr[idx]], *batch_arrays([enc_tr[i] for i in idx], n_img)))
            return out

        # 6. resume
        start = common.resume_from_checkpoint(run, cfg, trainer, lambda ck: common.load_arrays(
            params, {k: v for k, v in ck.weights.items() if k in params})) if resume else 0

        meta = {"vision": tower.cfg.to_dict(), "mean": [float(v) for v in tower.mean],
                "std": [float(v) for v in tower.std], "feature_layer": tower.feature_layer, "image_tokens": n_img,
                "vision_source": tower.info}

        def save(step: int, extra: dict | None = None) -> Path:
            weights = {k: p.numpy() for k, p in vision_params.items()} | {k: p.numpy() for k, p in adapters.items()}
            return common.save_training_state(
                run, step, cfg, trainer, weights=weights, weights_kind="model",
                state={"data": {"seed": t.seed, "samples_seen": step * micro * accum}},
                extra_files={"vlm.json": common.json_bytes(meta), "model_config.json": common.json_bytes(
                    lm.config.to_dict()), **(extra or {})})

        t0 = time.perf_counter()
        hist = fit(trainer, get_batches, steps=t.steps, start_step=start, run=run, items_per_step=micro * accum,
                   unit="samples", ckpt_every=t.ckpt_every, save_ckpt=save, progress=progress, hooks=PERF_HOOKS,
                   description=f"vlm stage {cfg.stage}")
        wall = time.perf_counter() - t0

        # 7. held-out evaluation: real images, the shuffled-image control, category exact-match
        te0 = time.perf_counter()
        ev: dict = {"heldout_rows": len(enc_te), "heldout_images": len(held_imgs)}
        if enc_te:
            nll = vlm_token_nll(model, tower, vision_params)
            eb = min(cfg.eval.batch_size, len(enc_te))
            perm = np.arange(len(images))
            perm[held_imgs] = np.array(held_imgs)[derangement(len(held_imgs), t.seed)]
            # the text-only baseline has no image tokens: its shuffled control is the same computation, not re-run
            no_image = cfg.data.drop_images
            ev["loss_real"] = heldout_nll(nll, images, enc_te, img_te, n_img, eb, t.precision)
            ev["loss_shuffled"] = ev["loss_real"] if no_image else heldout_nll(nll, images, enc_te, perm[img_te],
                                                                                n_img, eb, t.precision)
            if no_image:
                ev["shuffled_control"] = "= real: data.drop_images leaves no image token to shuffle"
            ev["shuffle_gap_nats_per_token"] = ev["loss_shuffled"]["loss_per_token"] - ev["loss_real"]["loss_per_token"]
            cats = [i for i, r in enumerate(held_rows) if r["task"] == "category"]
            names = [i for i, r in enumerate(held_rows) if r["task"] == "name"]
            labels_train = [r["label"] for r in train_rows if r["task"] == "category"]
            n_cat = len({r["label"] for r in data.rows if r["task"] == "category"})

            def answers(rows_idx, shuffled: bool) -> list[str]:
                ii = perm[img_te[rows_idx]] if shuffled else img_te[rows_idx]
                with precision_context(t.precision):
                    return greedy_answers(model, tower, vision_params, tok, images, [enc_te[i] for i in rows_idx],
                                          ii, n_img, min(eb, len(rows_idx)), cfg.eval.max_new_tokens)
            if cats and cfg.eval.exact_match:
                gold = [held_rows[i]["label"] for i in cats]
                pred = answers(cats, False)
                pred_s = pred if no_image else answers(cats, True)
                majority = max(set(labels_train), key=labels_train.count) if labels_train else None
                ev.update(category_exact_match=exact_match(pred, gold, t.seed),
                          category_exact_match_shuffled=exact_match(pred_s, gold, t.seed),
                          category_chance=1.0 / max(n_cat, 1), n_categories=n_cat,
                          category_majority=float(np.mean([g == majority for g in gold])),
                          category_examples=[{"gold": g, "pred": p} for g, p in list(zip(gold, pred))[:8]])
            if names and cfg.eval.exact_match:
                gold = [held_rows[i]["messages"][-1]["content"] for i in names]
                pred = answers(names, False)
                pred_s = pred if no_image else answers(names, True)
                ev.update(name_token_f1=mean_ci([token_f1(p, g) for p, g in zip(pred, gold)], t.seed),
                          name_token_f1_shuffled=mean_ci([token_f1(p, g) for p, g in zip(pred_s, gold)], t.seed),
                          name_examples=[{"gold": g, "pred": p} for g, p in list(zip(gold, pred))[:8]])
        ev["eval_s"] = round(time.perf_counter() - te0, 3)
        run.event("test_eval", **{k: v for k, v in ev.items() if not k.endswith("_examples")})

        # 8. card in the final checkpoint; summary
        steps_done = t.steps
        card = model_card(cfg, run=run, scope=scope, params_total=params_total, datasets=records, ev=ev,
                          steps=steps_done, tower=tower) if enc_te else None
        final = save(t.steps, extra=card_files(card) if card else None)
        summary = {**common.throughput_summary(hist, steps=t.steps, start=start, wall=wall, per_step=micro * accum,
                                               unit="samples"),
                   "stage": cfg.stage, "eval": ev, "checkpoint": str(final), "params_total": params_total,
                   "params_trainable": num_params(params), "skipped_steps": trainer.skipped_steps,
                   "tower_heldout": tower_heldout}
        run.update(summary=summary)
        return {"run_id": run.id, "run_dir": str(run.dir), **summary}


def model_info(cfg: VLMFinetuneConfig) -> dict:
    """`zpctl model info`: parameter counts of the three parts (the tower and LM are built, not trained)."""
    tower = open_vision_tower(cfg.vision, seed=cfg.train.seed)
    lm, adapters = build_vlm_lm(cfg.model, cfg.stage, lora_spec(cfg), cfg.train.seed)
    n_proj = tower.cfg.dim * lm.config.dim + lm.config.dim * lm.config.dim + 2 * lm.config.dim
    return {"recipe": cfg.recipe, "stage": cfg.stage, "vision_params": num_params(tower.params),
            "projector_params": n_proj, "lora_params": sum(int(np.prod(v.shape)) for v in adapters.values()),
            "image_tokens": tower.n_tokens, "lm": cfg.model.config, "note": "counts only; no memory plan yet"}

