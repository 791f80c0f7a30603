"""The training-step benchmark: the recipe's model and engine step, optionally against its PyTorch twin.

Both sides get the same model (weights copied from tinygrad to torch before either trains), the same
micro-batches, batch size, sequence length, precision and AdamW settings. They alternate in one process:
warm-up of each, then `repeats` rounds of `steps` timed steps on tinygrad followed by the same on torch, so
machine noise (other jobs on a shared box) hits both and the per-round ratio survives it. The report gives
min/median/max of the ratio over rounds.

Token ids are uniform random draws from the vocabulary with a fixed seed: step time does not depend on the
token values, and a benchmark must not need an approved corpus. The loss on the first step is compared
between the two sides as a check that they really compute the same model.
"""
from __future__ import annotations

import os
import time

import numpy as np
from tinygrad import Device

from ..engine import EngineConfig, Trainer, cpu_threads, jitcache, lr_at
from ..models.llama import param_count, state_dict
from ..models.llm import build_llm, lm_loss, trainable_params, warm_start_args
from ..models.lora import LoRASpec, count_lora_params
from . import torch_ref
from .flops import step_flops
from .meter import PerfMeter


def make_batches(n: int, grad_accum: int, batch: int, seq_len: int, vocab: int, seed: int = 0) -> list[list[tuple]]:
    rng = np.random.default_rng([seed, 0xBE4C])
    out = []
    for _ in range(n):
        mbs = []
        for _ in range(grad_accum):
            toks = rng.integers(0, vocab, size=(batch, seq_len + 1), dtype=np.int64).astype(np.int32)
            mbs.append((np.ascontiguousarray(toks[:, :-1]), np.ascontiguousarray(toks[:, 1:])))
        out.append(mbs)
    return out


def _stats(xs: list[float]) -> dict:
    return {"min": float(min(xs)), "median": float(np.median(xs)), "max": float(max(xs))} if xs else None


def run_bench(cfg, *, steps: int = 5, repeats: int = 3, compare_torch: bool = False, warmup: int = 2,
              progress=None, torch_threads: int | None = None) -> dict:
    """cfg: an LLMFinetuneConfig. Returns the bench record (JSON-able)."""
    jitcache.enable()               # steps an earlier process captured load from $ZP_CACHE (engine/jitcache.py)
    threads = cpu_threads.enable()  # split CPU kernels run on every core

    t = cfg.train
    B, T, A = t.micro_batch_size, cfg.data.seq_len, t.grad_accum
    tokens_per_step = B * T * A
    say = progress or (lambda msg: None)

    t_build = time.perf_counter()
    lora = LoRASpec(**cfg.lora.model_dump())
    lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
    model, mc = lm.model, lm.config
    params = trainable_params(model, cfg.method, lora, t.seed)
    build_s = time.perf_counter() - t_build
    n_lora = count_lora_params(mc, lora) if cfg.method == "lora" else 0
    fl = step_flops(mc, seq_len=T, tokens_per_step=tokens_per_step, method=cfg.method, n_lora=n_lora)
    total_steps = warmup + steps * repeats
    batches = make_batches(total_steps, A, B, T, mc.vocab_size, seed=t.seed)
    ecfg = EngineConfig(lr=t.lr, total_steps=total_steps, warmup_steps=0, min_lr_ratio=t.min_lr_ratio,
                        weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=A, precision=t.precision,
                        loss_scale=t.loss_scale, jit=t.jit)

    tw = None
    if compare_torch:   # snapshot the starting weights before tinygrad trains them
        torch = torch_ref.require_torch()
        threads_before = torch.get_num_threads()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        base = {k: v.numpy() for k, v in state_dict(model).items()}
        adapters = {k: v.numpy() for k, v in params.items()} if cfg.method == "lora" else None
        lora = ({"rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "targets": cfg.lora.targets}
                if cfg.method == "lora" else None)
        if cfg.lora.dropout and cfg.method == "lora":
            say("note: LoRA dropout is not modelled in the torch twin; benchmarking without it on both sides")
        tmodel, tparams = torch_ref.build_torch_model(mc, base, lora=lora, adapters=adapters, dtype=t.precision)
        topt = torch_ref.make_optimizer(tparams, ecfg)
        tbatches = [[(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))) for x, y in mbs]
                    for mbs in batches]
        tw = {"model": tmodel, "params": tparams, "opt": topt, "batches": tbatches}

    trainer = Trainer(params, lm_loss(model), ecfg,
                      **warm_start_args(model, params, method=cfg.method, lora=LoRASpec(**cfg.lora.model_dump())))
    meter = PerfMeter(flops_per_step=fl.per_step, tokens_per_step=tokens_per_step, device=Device.DEFAULT,
                      precision=t.precision, warmup_steps=warmup).start()

    # warm-up: tinygrad's first calls build graphs, compile kernels and capture the JIT
    tg_losses, th_losses, tg_warm, th_warm = [], [], [], []
    for i in range(warmup):
        say(f"tinygrad warm-up step {i + 1}/{warmup}")
        t0 = time.perf_counter()
        st = trainer.step(batches[i])
        dt = time.perf_counter() - t0
        meter.step(tokens_per_step, dt, st.loss)
        tg_warm.append(dt)
        tg_losses.append(st.loss)
    if tw:
        for i in range(warmup):
            t0 = time.perf_counter()
            th_losses.append(torch_ref.train_step(tw["model"], tw["params"], tw["opt"], tw["batches"][i], ecfg,
                                                  lr_at(i, ecfg)))
            th_warm.append(time.perf_counter() - t0)

    rounds = []
    k = warmup
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: {steps} steps each side")
        t0 = time.perf_counter()
        for i in range(steps):
            s0 = time.perf_counter()
            st = trainer.step(batches[k + i])
            meter.step(tokens_per_step, time.perf_counter() - s0, st.loss)
            tg_losses.append(st.loss)
        tg_s = (time.perf_counter() - t0) / steps
        row = {"round": r + 1, "tinygrad_step_s": tg_s, "tinygrad_tokens_per_s": tokens_per_step / tg_s}
        if tw:
            t0 = time.perf_counter()
            for i in range(steps):
                th_losses.append(torch_ref.train_step(tw["model"], tw["params"], tw["opt"], tw["batches"][k + i],
                                                      ecfg, lr_at(k + i, ecfg)))
            th_s = (time.perf_counter() - t0) / steps
            row.update(torch_step_s=th_s, torch_tokens_per_s=tokens_per_step / th_s, ratio=th_s / tg_s)
        rounds.append(row)
        k += steps

    perf = meter.finish()
    tg_tps = [r["tinygrad_tokens_per_s"] for r in rounds]
    rec = {
        "config": {"model": cfg.model.config, "weights": cfg.model.weights, "method": cfg.method,
                   "lora": cfg.lora.model_dump() if cfg.method == "lora" else None,
                   "micro_batch_size": B, "seq_len": T, "grad_accum": A, "precision": t.precision, "jit": t.jit},
        "params_total": param_count(mc) + n_lora, "params_trainable": n_lora if cfg.method == "lora" else param_count(mc),
        "tokens_per_step": tokens_per_step, "steps": steps, "repeats": repeats, "warmup_steps": warmup,
        "data": "uniform random token ids, fixed seed (step time does not depend on token values)",
        "build_s": build_s, "flops": fl.to_dict(),
        "tinygrad": {"device": Device.DEFAULT, "first_step_s": tg_warm[0] if tg_warm else None,
                     "compile_s": sum(tg_warm), "warmup_step_s": tg_warm,
                     "tokens_per_s": _stats(tg_tps), "mfu": perf["mfu"], "peak": perf["peak"],
                     "memory": perf["memory"], "energy": perf["energy"], "losses": tg_losses,
                     "env": {k: os.environ[k] for k in ("BEAM", "JIT", "DEV", "CACHELEVEL") if k in os.environ},
                     # this process's start: "warm" when every step was replayed from $ZP_CACHE (engine/jitcache.py)
                     "warm_start": {"first_step_s": tg_warm[0] if tg_warm else None, **jitcache.report()},
                     "cpu_threads": threads},
        "rounds": rounds, "perf": perf,
    }
    if tw:
        th_tps = [r["torch_tokens_per_s"] for r in rounds]
        med_th = float(np.median([r["torch_step_s"] for r in rounds]))
        rec["torch"] = {"version": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
                        "first_step_s": th_warm[0] if th_warm else None, "warmup_step_s": th_warm,
                        "tokens_per_s": _stats(th_tps), "losses": th_losses,
                        "mfu": (fl.per_step / med_th / perf["peak"]["flops"]) if perf["peak"].get("flops") else None}
        rec["ratio_tinygrad_over_torch"] = _stats([r["ratio"] for r in rounds])
        rec["first_loss"] = {"tinygrad": tg_losses[0], "torch": th_losses[0],
                             "abs_diff": abs(tg_losses[0] - th_losses[0])}
        torch.set_num_threads(threads_before)   # process-wide setting: hand it back
    return rec
