"""A LLaVA-style vision-language model: a ViT/CLIP image tower, an MLP projector into a Llama's embedding space,
and the projected patch tokens spliced into the chat-templated prompt where the `<image>` placeholder stands.

    tower = open_vision_tower(VisionSpec(checkpoint="runs/clip/.../step-00000300"))   # or VisionSpec(config=...)
    proj = init_projector(tower.cfg.dim, lm.config.dim, seed=0)
    enc = encode_conversation(tok, messages, tower.n_tokens, seq_len=96, reply_len=16)  # ids, image slots, labels
    loss = vlm_loss(lm.model, tower, {**tower.params, **proj})      # engine loss: (images, ids, S, R, labels)
    vlm = open_vlm_checkpoint(path)          # verified; LoRA merged; vlm.prompt_embeds(images, ids) for generate

Shapes stay fixed so every step replays one captured graph: each prompt is right-padded to `seq_len`; the image
slots are given as a one-hot matrix S (seq_len x image tokens) per row, so splicing is `x*(1-m) + S @ img`; the
reply positions as a one-hot R (reply_len x seq_len), so the 49k-way output layer runs on the reply tokens only
(LLaVA's loss is on the assistant reply alone; the prompt's logits would be computed only to be thrown away).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator
from tinygrad import Tensor, dtypes

from ..checkpoint import load_checkpoint
from ..config import StrictModel, validate
from ..data.images import load_image
from ..errors import ConfigError, ZeropointError
from .clip import CLIPConfig
from .generate import GenerationResult, generate
from .llama import Llama
from .llm import LLMSpec, LoadedLM, build_llm, trainable_params
from .lora import LoRASpec, load_adapters, merge_lora
from .vit import ViTConfig, gelu_erf, init_vit_arrays, linear, to_tensors, vit_config, vit_hidden_states

IMAGE = "<image>"
PROJ = ("projector.fc1.w", "projector.fc1.b", "projector.fc2.w", "projector.fc2.b")


class VLMError(ZeropointError):
    pass


class VisionSpec(StrictModel):
    """The `vision:` section: the image tower, from a clip_contrastive checkpoint or a named ViT config."""
    checkpoint: str | None = Field(None, description="clip_contrastive checkpoint dir (verified); its image tower")
    config: str | None = Field(None, description="named ViT in models.vit.VIT_CONFIGS, random init (no checkpoint)")
    overrides: dict = Field(default_factory=dict, description="ViTConfig fields to change (named config only)")
    trainable: bool = Field(False, description="train the tower too (stage 2); frozen by default, as LLaVA")
    feature_layer: int = Field(-1, description="which hidden state's patch tokens feed the projector: -1 the last "
                                               "block's output, -2 the one before (LLaVA's choice) ...")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.checkpoint is None) == (self.config is None):
            raise ValueError("vision: give exactly one of checkpoint (a clip_contrastive checkpoint) or config "
                             "(a named ViT)")
        if self.checkpoint and self.overrides:
            raise ValueError("vision.overrides change a named config; a checkpoint's tower has its own shape")
        return self


@dataclass
class VisionTower:
    cfg: ViTConfig
    params: dict[str, Tensor]                # "visual.*"
    mean: list[float] | None                 # the tower's input normalisation (None: to be measured on the data)
    std: list[float] | None
    feature_layer: int = -1
    info: dict = field(default_factory=dict)
    trained_heldout: frozenset[str] | None = None   # a CLIP checkpoint's held-out image names (never trained on)

    @property
    def n_tokens(self) -> int:
        return self.cfg.num_patches

    def depth_used(self) -> int:
        d = self.cfg.depth + 1 + self.feature_layer if self.feature_layer < 0 else self.feature_layer
        if not 0 <= d <= self.cfg.depth:
            raise ConfigError(f"vision.feature_layer {self.feature_layer} is outside the tower's "
                              f"{self.cfg.depth} blocks")
        return d


def open_vision_tower(spec: VisionSpec, seed: int = 0) -> VisionTower:
    if spec.checkpoint:
        ck = load_checkpoint(spec.checkpoint)
        if ck.config.get("recipe") != "clip_contrastive" or "clip_config.json" not in ck.extra:
            raise VLMError(f"vision.checkpoint {spec.checkpoint} is a {ck.config.get('recipe')!r} checkpoint; it "
                           "must be a clip_contrastive checkpoint (its image tower is used)")
        ccfg = CLIPConfig.from_dict(json.loads(ck.extra["clip_config.json"]))
        arrays = {k: v for k, v in ck.weights.items() if k.startswith("visual.") and k != "visual_proj"}
        norm = ck.state.get("normalize") or {}
        held = (ck.state.get("split") or {}).get("heldout_images")
        return VisionTower(ccfg.vision, to_tensors(arrays), norm.get("mean"), norm.get("std"), spec.feature_layer,
                           {"kind": "clip_checkpoint", "path": str(Path(spec.checkpoint).resolve()), "step": ck.step,
                            "split": (ck.state.get("split") or {}).get("rule")},
                           frozenset(held) if held is not None else None)
    try:
        cfg = vit_config(spec.config, **{"num_classes": 0, **spec.overrides})
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"vision.config {spec.config!r} / overrides {spec.overrides}: {e}") from None
    arrays = init_vit_arrays(cfg, seed, prefix="visual.")
    return VisionTower(cfg, to_tensors(arrays), None, None, spec.feature_layer, {"kind": "random", "config": spec.config})


def check_tower_heldout(tower: VisionTower, heldout_images: set[str]) -> dict:
    """A CLIP tower must not have trained on the VLM's held-out images (compared by file name): raise if it did;
    -> what was checked (a random tower, or a checkpoint that lists no held-out images, cannot be checked)."""
    if tower.info.get("kind") != "clip_checkpoint":
        return {"checked": False, "reason": "the tower is not a trained checkpoint's"}
    if tower.trained_heldout is None:
        return {"checked": False, "reason": "the CLIP checkpoint lists no held-out images (caption_jsonl data or "
                                            "an older run)"}
    seen = sorted(heldout_images - tower.trained_heldout)
    if seen:
        raise VLMError(f"{len(seen)} of the {len(heldout_images)} held-out images (e.g. {seen[0]}) were in the "
                       f"training split of the CLIP tower {tower.info['path']}; train the tower with data.split: "
                       "emoji_vlm and this dataset's held-out fraction, seed and per_category")
    return {"checked": True, "heldout_images": len(heldout_images), "seen_by_tower": 0}


def init_projector(vision_dim: int, lm_dim: int, seed: int = 0) -> dict[str, Tensor]:
    """LLaVA-1.5's projector: Linear -> GELU -> Linear, Kaiming-uniform-like init."""
    rng = np.random.default_rng([seed, 26])
    f = np.float32
    a = {"projector.fc1.w": rng.uniform(-1, 1, (lm_dim, vision_dim)) / math.sqrt(vision_dim),
         "projector.fc1.b": np.zeros(lm_dim), "projector.fc2.w": rng.uniform(-1, 1, (lm_dim, lm_dim)) / math.sqrt(lm_dim),
         "projector.fc2.b": np.zeros(lm_dim)}
    return to_tensors({k: v.astype(f) for k, v in a.items()})


def image_tokens(tower: VisionTower, p: dict[str, Tensor], images: Tensor, dtype=dtypes.float32) -> Tensor:
    """Projected patch tokens (B, patches, lm_dim) fp32."""
    h = vit_hidden_states(p, tower.cfg, images, prefix="visual.", dtype=dtype, depth=tower.depth_used())[-1][:, 1:]
    h = gelu_erf(linear(h.cast(dtype), p["projector.fc1.w"].cast(dtype), p["projector.fc1.b"].cast(dtype)))
    return linear(h, p["projector.fc2.w"].cast(dtype), p["projector.fc2.b"].cast(dtype)).float()


def spliced_embeds(model: Llama, tower: VisionTower, p: dict[str, Tensor], images: Tensor, ids: Tensor,
                   slots: Tensor) -> Tensor:
    """Token embeddings with the image slots (one-hot `slots`: B x T x patches) holding the projected patches."""
    img = image_tokens(tower, p, images, model.compute_dtype)
    m = slots.sum(-1, keepdim=True)
    return model.embed(ids) * (1.0 - m) + slots @ img


def reply_logits(model: Llama, tower: VisionTower, p: dict[str, Tensor], images, ids, slots, reply) -> Tensor:
    h = model.hidden_from_embeds(spliced_embeds(model, tower, p, images, ids, slots))
    return model.logits_from_hidden(reply @ h)          # (B, reply_len, V): the reply positions only


def masked_token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-position negative log-likelihood (B, K); 0 where the label is -1."""
    mask = labels >= 0
    onehot = labels.maximum(0).unsqueeze(-1)._one_hot_along_dim(logits.shape[-1], dim=-1)
    return -(logits.log_softmax(-1) * onehot).sum(-1) * mask


def vlm_loss(model: Llama, tower: VisionTower, p: dict[str, Tensor]):
    """Engine loss: mean NLL per reply token of a micro-batch (images, ids, slots, reply, labels)."""
    def loss(images, ids, slots, reply, labels):
        nll = masked_token_nll(reply_logits(model, tower, p, images, ids, slots, reply), labels)
        return nll.sum() / (labels >= 0).sum().maximum(1)
    return loss


def vlm_token_nll(model: Llama, tower: VisionTower, p: dict[str, Tensor]):
    """(images, ids, slots, reply, labels) -> per-token NLL (B, K), for exact held-out sums."""
    def f(images, ids, slots, reply, labels):
        return masked_token_nll(reply_logits(model, tower, p, images, ids, slots, reply), labels)
    return f


# ---- conversations -> fixed-shape rows ------------------------------------------------------------------------
@dataclass
class EncodedRow:
    ids: np.ndarray           # (T,) int32, right-padded
    slots: np.ndarray         # (T,) int32: image token index at each position, -1 elsewhere
    reply_pos: np.ndarray     # (K,) int32: the position whose logits predict each reply token (-1 = unused)
    labels: np.ndarray        # (K,) int32: the reply token ids (-1 = unused)
    n: int                    # real length


def _segments(tok, text: str, n_img: int, image_id: int) -> tuple[list[int], list[int]]:
    ids, slots = [], []
    parts = text.split(IMAGE)
    for i, part in enumerate(parts):
        if part:
            enc = tok.encode(part)
            ids += enc
            slots += [-1] * len(enc)
        if i < len(parts) - 1:
            ids += [image_id] * n_img
            slots += list(range(n_img))
    return ids, slots


def encode_conversation(tok, messages: list[dict], n_img: int, *, seq_len: int, reply_len: int,
                        image_id: int = 0, where: str = "conversation", image: bool = True) -> EncodedRow:
    """Chat-template the turns; the `<image>` placeholder (exactly once; never with `image=False`, the text-only
    baseline) becomes `n_img` image slots; every assistant turn (its text and the template's end-of-turn) is
    labelled, nothing else."""
    if sum(m.get("content", "").count(IMAGE) for m in messages) != int(image):
        raise VLMError(f"{where}: the turns must contain the {IMAGE} placeholder exactly once" if image else
                       f"{where}: a text-only row still contains {IMAGE}")
    if not any(m.get("role") == "assistant" for m in messages):
        raise VLMError(f"{where}: no assistant turn to learn from")
    ids, slots, pos, labels = [], [], [], []
    done = ""
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        ctx = tok.apply_chat_template(messages[:i], add_generation_prompt=True)
        full = tok.apply_chat_template(messages[:i + 1], add_generation_prompt=False)
        if not (ctx.startswith(done) and full.startswith(ctx)):
            raise VLMError(f"{where}: the chat template does not render turn by turn as a prefix; "
                           "VLM training needs a ChatML-style template")
        a, s = _segments(tok, ctx[len(done):], n_img, image_id)
        ids, slots = ids + a, slots + s
        reply = full[len(ctx):]
        body = reply.rstrip("\n")
        r = tok.encode(body)
        pos += list(range(len(ids) - 1, len(ids) - 1 + len(r)))
        labels += r
        ids, slots = ids + r, slots + [-1] * len(r)
        tail = tok.encode(reply[len(body):]) if reply[len(body):] else []
        ids, slots = ids + tail, slots + [-1] * len(tail)
        done = full
    if len(ids) > seq_len:
        raise VLMError(f"{where}: {len(ids)} tokens (with {n_img} image tokens) exceed data.seq_len {seq_len}; "
                       "raise data.seq_len or shorten the turns")
    if len(labels) > reply_len:
        raise VLMError(f"{where}: the assistant turns have {len(labels)} tokens, more than data.reply_len "
                       f"{reply_len}; raise data.reply_len")
    n = len(ids)
    pad = lambda xs, k, v: np.array(xs + [v] * (k - len(xs)), np.int32)   # noqa: E731
    return EncodedRow(pad(ids, seq_len, 0), pad(slots, seq_len, -1), pad(pos, reply_len, -1),
                      pad(labels, reply_len, -1), n)


def batch_arrays(rows: list[EncodedRow], n_img: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids B x T, slots one-hot B x T x n_img, reply one-hot B x K x T, labels B x K)."""
    ids = np.stack([r.ids for r in rows])
    B, T = ids.shape
    K = rows[0].labels.shape[0]
    slots = np.zeros((B, T, n_img), np.float32)
    reply = np.zeros((B, K, T), np.float32)
    for b, r in enumerate(rows):
        t = np.nonzero(r.slots >= 0)[0]
        slots[b, t, r.slots[t]] = 1.0
        k = np.nonzero(r.reply_pos >= 0)[0]
        reply[b, k, r.reply_pos[k]] = 1.0
    return ids, slots, reply, np.stack([r.labels for r in rows])


# ---- a trained VLM, opened for generation ---------------------------------------------------------------------
@dataclass
class LoadedVLM:
    lm: LoadedLM
    tower: VisionTower
    params: dict[str, Tensor]     # visual.* + projector.*
    info: dict

    def prompt_embeds(self, image: np.ndarray, messages: list[dict]) -> tuple[list[int], np.ndarray]:
        """(prompt ids, input embeddings (n, dim)) of one normalised image (3, H, W) and the chat turns."""
        text = self.lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids, slots = _segments(self.lm.tokenizer, text, self.tower.n_tokens, 0)
        if sum(s >= 0 for s in slots) != self.tower.n_tokens:
            raise VLMError(f"the prompt must contain the {IMAGE} placeholder exactly once")
        S = np.zeros((1, len(ids), self.tower.n_tokens), np.float32)
        t = np.nonzero(np.array(slots) >= 0)[0]
        S[0, t, np.array(slots)[t]] = 1.0
        x = spliced_embeds(self.lm.model, self.tower, self.params, Tensor(image[None].astype(np.float32)),
                           Tensor(np.array([ids], np.int32)), Tensor(S))
        return ids, x.numpy()[0]

    def normalize(self, images: np.ndarray) -> np.ndarray:
        mean, std = np.asarray(self.tower.mean, np.float32), np.asarray(self.tower.std, np.float32)
        return (images - mean[:, None, None]) / std[:, None, None]


def is_vlm_checkpoint(ref: str | Path) -> bool:
    p = Path(ref)
    if not (p.is_dir() and (p / "config.json").is_file() and (p / "manifest.json").is_file()):
        return False
    try:
        return json.loads((p / "config.json").read_text(encoding="utf-8")).get("recipe") == "vlm_finetune"
    except (OSError, ValueError):
        return False


def build_vlm_lm(spec: LLMSpec, stage: int, lora: LoRASpec, seed: int, precision: str = "fp32"):
    """The language model of a VLM config: the base (frozen), plus LoRA adapters in stage 2. -> (lm, adapters)."""
    lm = build_llm(spec, precision=precision, seed=seed)
    adapters = trainable_params(lm.model, "lora", lora, seed, precision=precision) if stage == 2 else {}
    return lm, {f"lm.{k}": v for k, v in adapters.items()}


def open_vlm_checkpoint(path: str | Path) -> LoadedVLM:
    """A vlm_finetune checkpoint (verified file by file): the LM rebuilt from its config with the adapters merged,
    the image tower and projector from the checkpoint's own weights."""
    ck = load_checkpoint(path)
    raw = ck.config
    if raw.get("recipe") != "vlm_finetune":
        raise VLMError(f"{path} is a {raw.get('recipe')!r} checkpoint, not vlm_finetune")
    spec = validate(LLMSpec, raw.get("model") or {}, f"{path}/config.json (model)")
    stage = int(raw.get("stage", 1))
    seed = int((raw.get("train") or {}).get("seed", 0))
    lm, _ = build_vlm_lm(spec, stage, LoRASpec.from_section(raw.get("lora")), seed)
    if stage == 2:
        load_adapters(lm.model, {k[3:]: v for k, v in ck.weights.items() if k.startswith("lm.")})
        merge_lora(lm.model)
    vis = {k: v for k, v in ck.weights.items() if k.startswith("visual.")}
    meta = json.loads(ck.extra["vlm.json"])
    vcfg = ViTConfig.from_dict(meta["vision"])
    tower = VisionTower(vcfg, to_tensors(vis), meta["mean"], meta["std"], meta["feature_layer"], {"kind": "checkpoint"})
    proj = to_tensors({k: ck.weights[k] for k in PROJ})
    return LoadedVLM(lm, tower, {**tower.params, **proj},
                     {"kind": "vlm_checkpoint", "path": str(Path(path).resolve()), "stage": stage, "step": ck.step,
                      "image_size": vcfg.image_size})


def generate_from_image(vlm: LoadedVLM, image: str | Path, prompt: str, system: str | None = None,
                        **kw) -> GenerationResult:
    """Answer `prompt` about the image file (decoded at the tower's size, normalised as in training), with the
    KV cache and streaming of `models.generate.generate` (`on_token`, `max_tokens`, `temperature`, ...). The
    prompt is the user turn; `<image>` marks where the image goes (before the text when absent). `system`: a system
    turn first (the one the training conversations had; None leaves the chat template's default)."""
    x = vlm.normalize(load_image(image, vlm.tower.cfg.image_size, vlm.tower.cfg.channels)[None])[0]
    content = prompt if IMAGE in prompt else f"{IMAGE}\n{prompt}"
    turns = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": content}]
    ids, emb = vlm.prompt_embeds(x, turns)
    return generate(vlm.lm.model, vlm.lm.tokenizer, ids, prompt_embeds=emb, **kw)
