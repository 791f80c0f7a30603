"""The training-step bench of the vision recipes: images (ViT) or image-caption pairs (CLIP) per second of the
recipe's model and engine step, optionally side by side with its PyTorch twin (`perf/torch_vision.py`).

As `perf/bench.py` does for the LLM: both sides start from the same weights (the init arrays, copied to torch
before either trains) and see the same micro-batches, batch size, precision and AdamW settings. They alternate
in one process: warm-up of each, then `repeats` rounds of `steps` timed steps on tinygrad followed by the same on
torch, so machine noise hits both and the per-round ratio survives it; the report gives min/median/max of the
ratio over rounds.

Images are standard-normal draws (what a normalised image looks like), labels and caption token ids uniform
draws, all from a fixed seed: step time does not depend on pixel values, and a benchmark must not need an
approved dataset. The losses of every step are compared between the two sides as a check that they compute
the same model; the ViT's head starts at zero (every class equally likely), so the first loss is ln(classes) on
both sides whatever the body computes, and the steps after it are the ones that test the body.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import replace

import numpy as np
from tinygrad import Device
from tinygrad.helpers import GlobalCounters

from ..engine import Trainer, compute_dtype, lr_at
from ..models import clip as C
from ..models.vit import ViTConfig, classification_loss, init_vit_arrays, num_params, to_tensors, vit_memory_plan
from . import torch_ref
from . import torch_vision as TV
from .flops import clip_flops, vit_flops
from .meter import PerfMeter


def make_image_batches(n: int, grad_accum: int, batch: int, image_shape: tuple, *, num_classes: int | None = None,
                       text=None, seed: int = 0) -> list[list[tuple]]:
    """`n` optimizer steps of `grad_accum` micro-batches: (images, labels) for a classifier, (images, token ids)
    for CLIP (`text` = its TextConfig: BOS, random tokens, EOS at a random length, EOS padding)."""
    rng = np.random.default_rng([seed, 0xB15])
    out = []
    for _ in range(n):
        mbs = []
        for _ in range(grad_accum):
            x = rng.standard_normal((batch, *image_shape)).astype(np.float32)
            if text is None:
                y = rng.integers(0, num_classes, size=batch).astype(np.int32)
            else:
                y = np.full((batch, text.context), text.eos_id, np.int32)
                y[:, 0] = text.bos_id
                for row, length in zip(y, rng.integers(1, text.context - 1, size=batch)):
                    row[1:1 + length] = rng.integers(0, text.vocab_size, size=length)
                    row[1:1 + length][row[1:1 + length] == text.eos_id] = text.bos_id   # one EOS per caption
            mbs.append((x, y))
        out.append(mbs)
    return out


def _stats(xs: list[float]) -> dict | None:
    return {"min": float(min(xs)), "median": float(np.median(xs)), "max": float(max(xs))} if xs else None


def run_vision_bench(mcfg, train, *, label_smoothing: float = 0.0, steps: int = 5, repeats: int = 3,
                     compare_torch: bool = False, warmup: int = 2, progress=None,
                     torch_threads: int | None = None) -> dict:
    """mcfg: a ViTConfig (vit_classify) or CLIPConfig (clip_contrastive); train: the recipe's `train:` section.
    Returns the bench record (JSON-able), throughput in samples (`unit`) per second."""
    say = progress or (lambda msg: None)
    t = train
    B, A = t.micro_batch_size, t.grad_accum
    per_step = B * A
    is_vit = isinstance(mcfg, ViTConfig)
    vis = mcfg if is_vit else mcfg.vision
    unit = "images" if is_vit else "pairs"
    total_steps = warmup + steps * repeats
    # the recipe's schedule without warm-up, so every timed step runs at a real learning rate (as perf/bench.py)
    ecfg = replace(t.engine_config(total_steps=total_steps), warmup_steps=0)

    # buffers this process already held (unreachable ones from earlier work wait for the cycle collector) are not
    # the bench's: collect them, and count only what is held above this point
    gc.collect()
    held_before = int(GlobalCounters.mem_used)
    t_build = time.perf_counter()
    arrays = init_vit_arrays(mcfg, t.seed) if is_vit else C.init_clip_arrays(mcfg, t.seed)
    params = to_tensors(arrays)
    build_s = time.perf_counter() - t_build
    dtype = compute_dtype(t.precision)
    if is_vit:
        loss_fn = classification_loss(params, mcfg, label_smoothing=label_smoothing, dtype=dtype)
        fl = vit_flops(mcfg, images_per_step=per_step)
    else:
        loss_fn = C.contrastive_loss(params, mcfg, dtype)
        fl = clip_flops(mcfg, batch=B, pairs_per_step=per_step)
    image_shape = (vis.channels, vis.image_size, vis.image_size)
    batches = make_image_batches(total_steps, A, B, image_shape, num_classes=mcfg.num_classes if is_vit else None,
                                 text=None if is_vit else mcfg.text, seed=t.seed)

    tw = None
    if compare_torch:
        torch = torch_ref.require_torch()
        threads_before = torch.get_num_threads()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        tp = TV.torch_params(arrays)
        tloss = (TV.classification_loss(tp, mcfg, label_smoothing, t.precision) if is_vit
                 else TV.contrastive_loss(tp, mcfg, t.precision))
        tparams = list(tp.values())
        tw = {"loss": tloss, "params": tparams, "opt": torch_ref.make_optimizer(tparams, ecfg),
              "batches": [[(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in mbs]
                          for mbs in batches]}

    def torch_step(i: int) -> float:
        return TV.train_step(tw["loss"], tw["params"], tw["opt"], tw["batches"][i], ecfg, lr_at(i, ecfg))

    trainer = Trainer(params, loss_fn, ecfg)
    meter = PerfMeter(flops_per_step=fl.per_step, tokens_per_step=per_step, device=Device.DEFAULT,
                      precision=t.precision, warmup_steps=warmup, unit=unit).start()

    # warm-up: tinygrad's first calls build graphs, compile kernels and capture the JIT
    tg_losses, th_losses, tg_warm, th_warm = [], [], [], []
    for i in range(warmup):
        say(f"tinygrad warm-up step {i + 1}/{warmup}")
        t0 = time.perf_counter()
        st = trainer.step(batches[i])
        dt = time.perf_counter() - t0
        meter.step(per_step, dt, st.loss)
        tg_warm.append(dt)
        tg_losses.append(st.loss)
    if tw:
        for i in range(warmup):
            t0 = time.perf_counter()
            th_losses.append(torch_step(i))
            th_warm.append(time.perf_counter() - t0)

    rounds, k = [], warmup
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: {steps} steps each side")
        t0 = time.perf_counter()
        for i in range(steps):
            s0 = time.perf_counter()
            st = trainer.step(batches[k + i])
            meter.step(per_step, time.perf_counter() - s0, st.loss)
            tg_losses.append(st.loss)
        tg_s = (time.perf_counter() - t0) / steps
        row = {"round": r + 1, "tinygrad_step_s": tg_s, f"tinygrad_{unit}_per_s": per_step / tg_s}
        if tw:
            t0 = time.perf_counter()
            for i in range(steps):
                th_losses.append(torch_step(k + i))
            th_s = (time.perf_counter() - t0) / steps
            row.update({"torch_step_s": th_s, f"torch_{unit}_per_s": per_step / th_s, "ratio": th_s / tg_s})
        rounds.append(row)
        k += steps

    perf = meter.finish()
    # the plan `zpctl model info` prints, beside what tinygrad's allocator really held at its peak
    plan = (vit_memory_plan if is_vit else C.clip_memory_plan)(mcfg, precision=t.precision, micro_batch_size=B,
                                                               grad_accum=A)
    peak_held = perf["memory"].get("device_mem_peak_bytes")
    measured = peak_held - held_before if peak_held else None
    rec = {
        "recipe": "vit_classify" if is_vit else "clip_contrastive", "unit": unit,
        "config": {"model": mcfg.to_dict(), "micro_batch_size": B, "grad_accum": A, "precision": t.precision,
                   "jit": t.jit, **({"label_smoothing": label_smoothing} if is_vit else {})},
        "params_total": num_params(params), "params_trainable": num_params(params),
        f"{unit}_per_step": per_step, "steps": steps, "repeats": repeats, "warmup_steps": warmup,
        "data": "standard-normal images, uniform random " + ("labels" if is_vit else "caption token ids")
                + ", fixed seed (step time does not depend on the values); random init weights",
        "build_s": build_s, "flops": fl.to_dict(),
        "tinygrad": {"device": Device.DEFAULT, "first_step_s": tg_warm[0] if tg_warm else None,
                     "compile_s": sum(tg_warm), "warmup_step_s": tg_warm,
                     f"{unit}_per_s": _stats([r[f"tinygrad_{unit}_per_s"] for r in rounds]), "mfu": perf["mfu"],
                     "peak": perf["peak"], "memory": perf["memory"], "energy": perf["energy"], "losses": tg_losses,
                     "env": {k: os.environ[k] for k in ("BEAM", "JIT", "DEV", "CACHELEVEL") if k in os.environ}},
        "rounds": rounds, "perf": perf,
        "memory_plan": {"plan_bytes": plan["memory"], "measured_peak_bytes": measured,
                        "measured_over_plan": measured / plan["memory"]["total_bytes"] if measured else None,
                        "held_before_bytes": held_before,
                        "measured": "tinygrad allocator bytes held (GlobalCounters.mem_used), max over steps, less "
                                    "what the process held before the bench built its model"},
    }
    if tw:
        med_th = float(np.median([r["torch_step_s"] for r in rounds]))
        rec["torch"] = {"version": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
                        "first_step_s": th_warm[0] if th_warm else None, "warmup_step_s": th_warm,
                        f"{unit}_per_s": _stats([r[f"torch_{unit}_per_s"] for r in rounds]), "losses": th_losses,
                        "mfu": (fl.per_step / med_th / perf["peak"]["flops"]) if perf["peak"].get("flops") else None}
        rec["ratio_tinygrad_over_torch"] = _stats([r["ratio"] for r in rounds])
        rec["first_loss"] = {"tinygrad": tg_losses[0], "torch": th_losses[0],
                             "abs_diff": abs(tg_losses[0] - th_losses[0])}
        rec["loss_max_abs_diff"] = max(abs(a - b) for a, b in zip(tg_losses, th_losses))
        torch.set_num_threads(threads_before)   # process-wide setting: hand it back
    return rec
