"""Hugging Face `transformers` layouts for ViT (`ViTForImageClassification`) and CLIP (`CLIPModel`).

Users bring published weights as a directory with `config.json` + `model.safetensors`; we save in the same
layout so `transformers` can load what we train. The mapping is a table of (our key, HF key) pairs built from
the config; the only non-trivial entries split our fused q/k/v projection into HF's three and reshape CLIP's
class/position embeddings. Loading checks every key and shape and names what is missing or unexpected.
No pickle: `pytorch_model.bin` files are refused with a hint to convert them to safetensors.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from ..errors import ZeropointError
from ..workspace import atomic_write_bytes, atomic_write_text
from .clip import CLIPConfig, TextConfig
from .vit import ViTConfig


class HFFormatError(ZeropointError):
    pass


# ---- key tables ----------------------------------------------------------------------------------------------
def _block_pairs(ours: str, hf: str, attn: str, names: dict[str, str]) -> list[tuple[str, str]]:
    """(our, hf) for one block; the fused qkv is listed as ('qkv', attn) and split by the caller."""
    out = [(ours + "qkv", hf + attn)]
    for o, h in names.items():
        out += [(ours + o + ".w", hf + h + ".weight"), (ours + o + ".b", hf + h + ".bias")]
    return out


VIT_BLOCK = {"ln1": "layernorm_before", "ln2": "layernorm_after", "proj": "attention.output.dense",
             "fc1": "intermediate.dense", "fc2": "output.dense"}
CLIP_BLOCK = {"ln1": "layer_norm1", "ln2": "layer_norm2", "proj": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
VIT_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
CLIP_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def vit_pairs(cfg: ViTConfig) -> list[tuple[str, str]]:
    e = "vit.embeddings."
    p = [("patch.w", e + "patch_embeddings.projection.weight"), ("cls", e + "cls_token"),
         ("pos", e + "position_embeddings")]
    if cfg.patch_bias:
        p.append(("patch.b", e + "patch_embeddings.projection.bias"))
    for i in range(cfg.depth):
        p += _block_pairs(f"blocks.{i}.", f"vit.encoder.layer.{i}.", "VIT", VIT_BLOCK)
    p += [("norm.w", "vit.layernorm.weight"), ("norm.b", "vit.layernorm.bias")]
    if cfg.num_classes:
        p += [("head.w", "classifier.weight"), ("head.b", "classifier.bias")]
    return p


def clip_pairs(cfg: CLIPConfig) -> list[tuple[str, str]]:
    v, t = "vision_model.", "text_model."
    p = [("visual.patch.w", v + "embeddings.patch_embedding.weight"), ("visual.cls", v + "embeddings.class_embedding"),
         ("visual.pos", v + "embeddings.position_embedding.weight"),
         ("visual.ln_pre.w", v + "pre_layrnorm.weight"), ("visual.ln_pre.b", v + "pre_layrnorm.bias")]
    for i in range(cfg.vision.depth):
        p += _block_pairs(f"visual.blocks.{i}.", f"{v}encoder.layers.{i}.", "CLIP", CLIP_BLOCK)
    p += [("visual.norm.w", v + "post_layernorm.weight"), ("visual.norm.b", v + "post_layernorm.bias"),
          ("text.tok", t + "embeddings.token_embedding.weight"), ("text.pos", t + "embeddings.position_embedding.weight")]
    for i in range(cfg.text.depth):
        p += _block_pairs(f"text.blocks.{i}.", f"{t}encoder.layers.{i}.", "CLIP", CLIP_BLOCK)
    p += [("text.norm.w", t + "final_layer_norm.weight"), ("text.norm.b", t + "final_layer_norm.bias"),
          ("visual_proj", "visual_projection.weight"), ("text_proj", "text_projection.weight"),
          ("logit_scale", "logit_scale")]
    return p


def _to_hf(arrays: dict[str, np.ndarray], pairs, hf_shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    out = {}
    for ours, hf in pairs:
        if ours.endswith("qkv"):
            qkv_names = VIT_QKV if hf.endswith("VIT") else CLIP_QKV
            base = hf[:-len("VIT")] if hf.endswith("VIT") else hf[:-len("CLIP")]
            for part, name in zip(np.split(arrays[ours + ".w"], 3, axis=0), qkv_names):
                out[f"{base}{name}.weight"] = np.ascontiguousarray(part)
            for part, name in zip(np.split(arrays[ours + ".b"], 3, axis=0), qkv_names):
                out[f"{base}{name}.bias"] = np.ascontiguousarray(part)
            continue
        a = arrays[ours]
        out[hf] = np.array(a.reshape(hf_shapes[hf]) if hf in hf_shapes else a, copy=True, order="C")  # keeps 0-d shapes
    return out


def _from_hf(sd: dict[str, np.ndarray], pairs, our_shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    out, used = {}, set()

    def get(k):
        if k not in sd:
            raise HFFormatError(f"HF checkpoint has no tensor {k!r}; the config.json and the weights disagree "
                                "(or this is not a ViT/CLIP checkpoint)")
        used.add(k)
        return np.asarray(sd[k], np.float32)

    for ours, hf in pairs:
        if ours.endswith("qkv"):
            qkv_names = VIT_QKV if hf.endswith("VIT") else CLIP_QKV
            base = hf[:-len("VIT")] if hf.endswith("VIT") else hf[:-len("CLIP")]
            out[ours + ".w"] = np.concatenate([get(f"{base}{n}.weight") for n in qkv_names], 0)
            out[ours + ".b"] = np.concatenate([get(f"{base}{n}.bias") for n in qkv_names], 0)
            continue
        a = get(hf)
        out[ours] = a.reshape(our_shapes[ours]) if ours in our_shapes else a
    # HF keeps buffers we do not need (position_ids); anything else unexpected means a different architecture
    extra = sorted(k for k in set(sd) - used if not k.endswith("position_ids"))
    if extra:
        raise HFFormatError(f"HF checkpoint has {len(extra)} tensor(s) this config does not use, e.g. {extra[:3]}; "
                            "check num_hidden_layers / the model type in config.json")
    return out


# ---- configs -------------------------------------------------------------------------------------------------
def vit_hf_config(cfg: ViTConfig, id2label: list[str] | None = None) -> dict:
    labels = id2label or [f"LABEL_{i}" for i in range(cfg.num_classes)]
    return {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": cfg.dim,
            "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads, "intermediate_size": cfg.mlp_dim,
            "hidden_act": "gelu" if cfg.act == "gelu" else "quick_gelu", "layer_norm_eps": cfg.eps,
            "image_size": cfg.image_size, "patch_size": cfg.patch_size, "num_channels": cfg.channels, "qkv_bias": True,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "id2label": {str(i): l for i, l in enumerate(labels)}, "label2id": {l: i for i, l in enumerate(labels)},
            # transformers' ViT classifies from the class token; a mean-pooled model says so here
            "zeropoint_pool": cfg.pool, "torch_dtype": "float32"}


def vit_config_from_hf(c: dict) -> ViTConfig:
    if c.get("model_type") not in (None, "vit"):
        raise HFFormatError(f"config.json model_type is {c.get('model_type')!r}, expected 'vit'")
    act = {"gelu": "gelu", "quick_gelu": "quick_gelu"}.get(c.get("hidden_act", "gelu"))
    if act is None:
        raise HFFormatError(f"hidden_act {c.get('hidden_act')!r} is not supported (gelu, quick_gelu)")
    if c.get("qkv_bias", True) is False:
        raise HFFormatError("qkv_bias=false ViT checkpoints are not supported")
    return ViTConfig(image_size=c.get("image_size", 224), patch_size=c.get("patch_size", 16),
                     channels=c.get("num_channels", 3), dim=c["hidden_size"], depth=c["num_hidden_layers"],
                     heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                     num_classes=len(c.get("id2label") or {}) or 0, pool=c.get("zeropoint_pool", "cls"), act=act,
                     eps=c.get("layer_norm_eps", 1e-12), patch_bias=True)


def clip_hf_config(cfg: CLIPConfig) -> dict:
    v, t = cfg.vision, cfg.text
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": cfg.embed_dim,
            "logit_scale_init_value": cfg.logit_scale_init,
            "text_config": {"model_type": "clip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.dim,
                            "intermediate_size": t.mlp_dim, "num_hidden_layers": t.depth,
                            "num_attention_heads": t.heads, "max_position_embeddings": t.context,
                            "hidden_act": t.act, "layer_norm_eps": t.eps, "projection_dim": cfg.embed_dim,
                            "bos_token_id": t.bos_id, "eos_token_id": t.eos_id, "pad_token_id": t.eos_id},
            "vision_config": {"model_type": "clip_vision_model", "hidden_size": v.dim, "intermediate_size": v.mlp_dim,
                              "num_hidden_layers": v.depth, "num_attention_heads": v.heads,
                              "num_channels": v.channels, "image_size": v.image_size, "patch_size": v.patch_size,
                              "hidden_act": v.act, "layer_norm_eps": v.eps, "projection_dim": cfg.embed_dim},
            "torch_dtype": "float32"}


def clip_config_from_hf(c: dict) -> CLIPConfig:
    if c.get("model_type") not in (None, "clip"):
        raise HFFormatError(f"config.json model_type is {c.get('model_type')!r}, expected 'clip'")
    tc, vc = c.get("text_config") or {}, c.get("vision_config") or {}
    try:
        text = TextConfig(vocab_size=tc["vocab_size"], context=tc.get("max_position_embeddings", 77), dim=tc["hidden_size"],
                          depth=tc["num_hidden_layers"], heads=tc["num_attention_heads"], mlp_dim=tc["intermediate_size"],
                          act=tc.get("hidden_act", "quick_gelu"), eps=tc.get("layer_norm_eps", 1e-5),
                          bos_id=tc.get("bos_token_id", 49406), eos_id=tc.get("eos_token_id", 49407))
        vision = ViTConfig(image_size=vc.get("image_size", 224), patch_size=vc.get("patch_size", 32),
                           channels=vc.get("num_channels", 3), dim=vc["hidden_size"], depth=vc["num_hidden_layers"],
                           heads=vc["num_attention_heads"], mlp_dim=vc["intermediate_size"], num_classes=0, pool="cls",
                           act=vc.get("hidden_act", "quick_gelu"), eps=vc.get("layer_norm_eps", 1e-5),
                           patch_bias=False, pre_norm=True)
    except KeyError as e:
        raise HFFormatError(f"CLIP config.json lacks {e}; expected text_config and vision_config sections") from None
    return CLIPConfig(vision=vision, text=text, embed_dim=c.get("projection_dim", 512),
                      logit_scale_init=c.get("logit_scale_init_value", math.log(1 / 0.07)))


# ---- conversion ----------------------------------------------------------------------------------------------
def vit_to_hf(arrays: dict[str, np.ndarray], cfg: ViTConfig) -> dict[str, np.ndarray]:
    return _to_hf(arrays, vit_pairs(cfg), {})


def vit_from_hf(sd: dict[str, np.ndarray], cfg: ViTConfig) -> dict[str, np.ndarray]:
    return _from_hf(sd, vit_pairs(cfg), {})


def clip_to_hf(arrays: dict[str, np.ndarray], cfg: CLIPConfig) -> dict[str, np.ndarray]:
    v = cfg.vision
    return _to_hf(arrays, clip_pairs(cfg), {"vision_model.embeddings.class_embedding": (v.dim,),
                                           "vision_model.embeddings.position_embedding.weight": (v.seq_len, v.dim),
                                           "logit_scale": ()})


def clip_from_hf(sd: dict[str, np.ndarray], cfg: CLIPConfig) -> dict[str, np.ndarray]:
    v = cfg.vision
    return _from_hf(sd, clip_pairs(cfg), {"visual.cls": (1, 1, v.dim), "visual.pos": (1, v.seq_len, v.dim),
                                         "logit_scale": (1,)})


# ---- files ---------------------------------------------------------------------------------------------------
def _save(directory: Path | str, tensors: dict[str, np.ndarray], config: dict) -> Path:
    d = Path(directory)
    atomic_write_bytes(d / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    atomic_write_text(d / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return d


def read_hf_dir(directory: Path | str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json, tensors) from a HF directory; safetensors only (single file or an index of shards)."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise HFFormatError(f"{d} has no config.json; pass a Hugging Face model directory")
    try:
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HFFormatError(f"{d / 'config.json'} is not valid JSON ({e})") from None
    files = sorted(d.glob("model*.safetensors"))
    if not files:
        hint = " (found pytorch_model.bin: pickle files are never loaded; convert it to safetensors)" \
            if (d / "pytorch_model.bin").exists() else ""
        raise HFFormatError(f"{d} has no model.safetensors{hint}")
    sd: dict[str, np.ndarray] = {}
    for f in files:
        try:
            part = load_file(str(f))
        except Exception as e:
            raise HFFormatError(f"{f} is not a valid safetensors file ({e})") from None
        sd.update(part)
    return config, sd


def save_hf_vit(directory, arrays: dict[str, np.ndarray], cfg: ViTConfig, id2label: list[str] | None = None) -> Path:
    return _save(directory, vit_to_hf(arrays, cfg), vit_hf_config(cfg, id2label))


def load_hf_vit(directory) -> tuple[ViTConfig, dict[str, np.ndarray], dict]:
    config, sd = read_hf_dir(directory)
    cfg = vit_config_from_hf(config)
    return cfg, vit_from_hf(sd, cfg), config


def save_hf_clip(directory, arrays: dict[str, np.ndarray], cfg: CLIPConfig) -> Path:
    return _save(directory, clip_to_hf(arrays, cfg), clip_hf_config(cfg))


def load_hf_clip(directory) -> tuple[CLIPConfig, dict[str, np.ndarray], dict]:
    config, sd = read_hf_dir(directory)
    cfg = clip_config_from_hf(config)
    return cfg, clip_from_hf(sd, cfg), config
