"""ViT: patch embedding equals a strided convolution, configs validate, HF key-name round trip is exact."""
import json

import numpy as np
import pytest
from tinygrad import Tensor

from zeropoint.models import hf_vision as H
from zeropoint.models.vit import (ViTConfig, init_vit, init_vit_arrays, patchify, to_tensors, vit_config, vit_forward,
                                 vit_forward_numpy)


def _conv_ref(x, w, b, p):
    """Direct strided convolution in numpy: what HF's Conv2d patch embedding computes."""
    B, C, Hh, W = x.shape
    D = w.shape[0]
    out = np.zeros((B, (Hh // p) * (W // p), D), np.float64)
    for i in range(Hh // p):
        for j in range(W // p):
            patch = x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1)
            out[:, i * (W // p) + j] = patch @ w.reshape(D, -1).T + b
    return out


def test_patch_embedding_matches_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    got = (patchify(Tensor(x), 4) @ Tensor(w).reshape(5, -1).T + Tensor(b)).numpy()
    np.testing.assert_allclose(got, _conv_ref(x, w, b, 4), atol=1e-4)


def test_config_validation_and_named_configs():
    assert vit_config("vit-b16").dim == 768 and vit_config("vit-b16").num_patches == 196
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig(dim=50, heads=4)
    with pytest.raises(KeyError, match="known"):
        vit_config("vit-nope")


def test_init_is_a_function_of_the_seed():
    c = vit_config("vit-micro-8")
    a, b, d = init_vit_arrays(c, 3), init_vit_arrays(c, 3), init_vit_arrays(c, 4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["blocks.0.qkv.w"], d["blocks.0.qkv.w"])


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_hf_round_trip_identical_outputs(tmp_path, pool):
    cfg = vit_config("vit-micro-8", pool=pool, num_classes=4)
    arrays = init_vit_arrays(cfg, seed=1)
    rng = np.random.default_rng(2)
    for k in arrays:   # random non-trivial values everywhere (a zero head would hide a mapping bug)
        arrays[k] = (arrays[k] + rng.standard_normal(arrays[k].shape) * 0.1).astype(np.float32)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    before = vit_forward(to_tensors(arrays), cfg, Tensor(x)).numpy()
    # an independent float64 numpy implementation agrees with the tinygrad forward
    np.testing.assert_allclose(before, vit_forward_numpy(arrays, cfg, x), atol=2e-4, rtol=1e-4)
    H.save_hf_vit(tmp_path / "hf", arrays, cfg, id2label=["a", "b", "c", "d"])
    conf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert conf["model_type"] == "vit" and conf["id2label"]["2"] == "c"
    from safetensors.numpy import load_file
    keys = set(load_file(str(tmp_path / "hf" / "model.safetensors")))
    for k in ("vit.embeddings.cls_token", "vit.embeddings.patch_embeddings.projection.weight",
              "vit.encoder.layer.1.attention.attention.query.weight", "vit.encoder.layer.0.attention.output.dense.bias",
              "vit.encoder.layer.0.intermediate.dense.weight", "vit.encoder.layer.0.layernorm_before.weight",
              "vit.layernorm.bias", "classifier.weight"):
        assert k in keys, k
    cfg2, arrays2, _ = H.load_hf_vit(tmp_path / "hf")
    assert cfg2 == cfg
    assert set(arrays2) == set(arrays) and all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
    after = vit_forward(to_tensors(arrays2), cfg2, Tensor(x)).numpy()
    assert np.abs(after - before).max() <= 1e-5
    assert np.abs(before).max() > 1e-3   # the comparison is over real, non-zero logits


def test_hf_load_names_missing_and_foreign_tensors(tmp_path):
    from safetensors.numpy import save_file
    cfg = vit_config("vit-micro-8")
    hf = H.vit_to_hf(init_vit_arrays(cfg), cfg)
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(H.vit_hf_config(cfg)))
    bad = dict(hf)
    del bad["vit.encoder.layer.1.attention.attention.key.weight"]
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(H.HFFormatError, match="layer.1.attention.attention.key.weight"):
        H.load_hf_vit(d)
    save_file({**hf, "vit.encoder.layer.9.output.dense.weight": np.zeros(2, np.float32)}, str(d / "model.safetensors"))
    with pytest.raises(H.HFFormatError, match="does not use"):
        H.load_hf_vit(d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(H.HFFormatError, match="pickle"):
        H.load_hf_vit(d)


def test_forward_rejects_wrong_image_shape():
    cfg = vit_config("vit-micro-8")
    with pytest.raises(ValueError, match="expected images"):
        vit_forward(init_vit(cfg), cfg, Tensor.zeros(2, 1, 9, 9))
