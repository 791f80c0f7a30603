"""Sizing the vision models from their configs alone: parameter counts equal the initialised weights, and the
FLOP counts equal what PyTorch's FLOP counter measures on the twin's forward and training step."""
import numpy as np
import pytest

from zeropoint.models import clip as C
from zeropoint.models.vit import VIT_CONFIGS, init_vit_arrays, vit_config, vit_memory_plan, vit_param_count
from zeropoint.perf.flops import clip_flops, vit_flops

SMALL_VITS = [n for n, c in VIT_CONFIGS.items() if c.dim <= 96]


def _size(arrays: dict) -> int:
    return sum(int(np.prod(a.shape)) for a in arrays.values())


@pytest.mark.parametrize("name", SMALL_VITS)
@pytest.mark.parametrize("over", [{}, {"pool": "cls", "patch_bias": False, "pre_norm": True, "num_classes": 0}])
def test_vit_param_count_equals_the_initialised_weights(name, over):
    cfg = vit_config(name, **over)
    assert vit_param_count(cfg) == _size(init_vit_arrays(cfg, seed=0))


@pytest.mark.parametrize("name", ["clip-emoji-tiny", "clip-micro"])
def test_clip_param_count_equals_the_initialised_weights(name):
    cfg = C.clip_config(name, vocab_size=777)
    assert C.clip_param_count(cfg) == _size(C.init_clip_arrays(cfg, seed=0))


def test_memory_plan_grows_with_the_batch_and_shrinks_with_precision():
    cfg = vit_config("vit-nano-28")
    a = vit_memory_plan(cfg, precision="fp32", micro_batch_size=32, grad_accum=1)
    b = vit_memory_plan(cfg, precision="fp32", micro_batch_size=64, grad_accum=4)
    h = vit_memory_plan(cfg, precision="fp16", micro_batch_size=64, grad_accum=4)
    assert a["params"] == 41_770 and a["memory"]["optimizer_bytes"] == 8 * 41_770
    assert b["memory"]["activations_bytes"] == 2 * a["memory"]["activations_bytes"]   # per micro-batch, not per step
    assert h["memory"]["activations_bytes"] < b["memory"]["activations_bytes"]
    assert h["memory"]["weights_bytes"] == 6 * 41_770            # fp32 masters + an fp16 copy for the matmuls
    assert b["memory"]["total_bytes"] == sum(v for k, v in b["memory"].items() if k != "total_bytes")


def _torch_flops(loss_or_out, backward: bool):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        out = loss_or_out()
        if backward:
            out.backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("name,over", [("vit-micro-8", {}), ("vit-nano-28", {"pool": "cls", "num_classes": 7})])
def test_vit_flops_match_torch_flop_counter(name, over):
    torch = pytest.importorskip("torch")
    from zeropoint.perf import torch_vision as TV
    cfg = vit_config(name, **over)
    p = TV.torch_params(init_vit_arrays(cfg, seed=0))
    x = torch.randn(3, cfg.channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (3,))
    fl = vit_flops(cfg, images_per_step=3)
    assert _torch_flops(lambda: TV.vit_forward(p, cfg, x), False) == 3 * fl.forward_per_sample
    assert _torch_flops(lambda: TV.classification_loss(p, cfg)(x, y), True) == fl.per_step


def test_clip_flops_match_torch_flop_counter():
    torch = pytest.importorskip("torch")
    from zeropoint.perf import torch_vision as TV
    cfg = C.clip_config("clip-micro", vocab_size=50, bos_id=0, eos_id=1)
    p = TV.torch_params(C.init_clip_arrays(cfg, seed=0))
    B, ctx = 4, cfg.text.context
    x = torch.randn(B, 3, cfg.vision.image_size, cfg.vision.image_size)
    ids = torch.randint(2, 50, (B, ctx))
    ids[:, 0], ids[:, 5:] = 0, 1
    fl = clip_flops(cfg, batch=B, pairs_per_step=B)
    assert _torch_flops(lambda: TV.contrastive_loss(p, cfg)(x, ids), True) == fl.per_step
