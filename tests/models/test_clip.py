"""CLIP: symmetric InfoNCE against numpy, EOS pooling, tokenizer determinism, HF key-name round trip."""
import math

import numpy as np
import pytest
from tinygrad import Tensor

from zeropoint.models import clip as C
from zeropoint.models import hf_vision as H

CAPTIONS = ["grinning face", "red apple", "flag: france", "flag: japan", "man running", "woman running",
            "green apple", "smiling face with sunglasses", "dog face", "cat face"]


def _tok():
    return C.train_caption_tokenizer(CAPTIONS, 300)


def _model(seed=0):
    tok = _tok()
    cfg = C.clip_config("clip-micro", vocab_size=tok.get_vocab_size(), bos_id=tok.token_to_id(C.BOS),
                        eos_id=tok.token_to_id(C.EOS))
    return tok, cfg, C.init_clip_arrays(cfg, seed)


def test_tokenizer_is_deterministic_and_pads_with_eos():
    a, b = _tok(), _tok()
    assert a.to_str() == b.to_str()
    ids = C.encode_captions(a, ["red apple", "a word never seen: zebra"], 12)
    eos = a.token_to_id(C.EOS)
    assert ids[0, 0] == a.token_to_id(C.BOS) and ids[0, -1] == eos
    assert (ids[1] != eos).sum() >= 3   # byte-level: unseen words still encode


def test_infonce_matches_numpy():
    rng = np.random.default_rng(0)
    img, txt = rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    p = {"logit_scale": Tensor([math.log(1 / 0.07)])}
    got = C.clip_loss(p, Tensor(img.astype(np.float32)), Tensor(txt.astype(np.float32))).item()
    logits = (1 / 0.07) * img @ txt.T

    def ce(lg):
        lg = lg - lg.max(1, keepdims=True)
        return -np.mean(np.diag(lg) - np.log(np.exp(lg).sum(1)))
    assert abs(got - (ce(logits) + ce(logits.T)) / 2) < 1e-4


def test_text_pooled_at_first_eos_ignores_padding():
    tok, cfg, arrays = _model()
    p = C.to_tensors(arrays) if hasattr(C, "to_tensors") else None
    p = p or {k: Tensor(v) for k, v in arrays.items()}
    ids = C.encode_captions(tok, ["red apple"], cfg.text.context)
    alt = ids.copy()
    n_real = int(np.argmax(ids[0] == cfg.text.eos_id)) + 1
    alt[0, n_real:] = 5   # garbage after the first EOS must not matter (causal mask)
    a = C.encode_text(p, cfg, Tensor(ids)).numpy()
    b = C.encode_text(p, cfg, Tensor(alt)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    other = C.encode_text(p, cfg, Tensor(C.encode_captions(tok, ["dog face"], cfg.text.context))).numpy()
    assert np.abs(a - other).max() > 1e-4


def test_hf_round_trip_identical_outputs(tmp_path):
    tok, cfg, arrays = _model(seed=3)
    rng = np.random.default_rng(1)
    for k in arrays:
        arrays[k] = (arrays[k] + rng.standard_normal(arrays[k].shape) * 0.05).astype(np.float32)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    ids = C.encode_captions(tok, CAPTIONS[:4], cfg.text.context)

    def outputs(a, c):
        p = {k: Tensor(v) for k, v in a.items()}
        img, txt = C.clip_embed(p, c, Tensor(x), Tensor(ids))
        return np.concatenate([img.numpy(), txt.numpy(), C.clip_logits(p, img, txt).numpy()], 1)
    before = outputs(arrays, cfg)
    H.save_hf_clip(tmp_path / "hf", arrays, cfg)
    from safetensors.numpy import load_file
    sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sd["logit_scale"].shape == () and sd["vision_model.embeddings.class_embedding"].shape == (cfg.vision.dim,)
    for k in ("text_model.encoder.layers.0.self_attn.q_proj.weight", "vision_model.pre_layrnorm.weight",
              "vision_model.post_layernorm.bias", "visual_projection.weight", "text_projection.weight",
              "text_model.final_layer_norm.weight", "text_model.embeddings.token_embedding.weight"):
        assert k in sd, k
    cfg2, arrays2, _ = H.load_hf_clip(tmp_path / "hf")
    assert cfg2 == cfg
    after = outputs(arrays2, cfg2)
    assert np.abs(after - before).max() <= 1e-5
    assert np.abs(before).max() > 1e-3


def test_named_configs():
    assert C.CLIP_CONFIGS["clip-vit-b32"].vision.patch_size == 32
    with pytest.raises(KeyError):
        C.clip_config("nope")
