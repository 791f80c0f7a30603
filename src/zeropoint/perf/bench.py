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

from ..engine import EngineConfig, Trainer, cpu_kernels, cpu_threads, jitcache, lr_at
from ..errors import ConfigError
from ..models.basequant import weight_numpy_f32
from ..models.llama import param_count, state_dict
from ..models.llm import build_llm, llm_memory_plan, lm_loss, trainable_params, warm_start_args
from ..models.lora import LoRASpec, count_lora_params
from . import torch_ref
from .devices import (
    check_torch_device,
    tinygrad_sync,
    torch_device_for,
    torch_info,
    torch_memory,
    torch_sync,
)
from .flops import step_flops
from .matmul import check_peak, matmul_flops
from .memory import AllocatorPeak
from .meter import PerfMeter
from .peak import device_peak
from .phases import TinygradPhases


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


class _Side:
    """Time and energy of one framework's segments (the sides alternate, so each keeps its own sums)."""

    def __init__(self, energy, sync):
        self.energy, self.sync = energy, sync
        self.joules, self.steps, self.seconds = 0.0, 0, 0.0
        self.metered = energy is not None and energy.meters

    def __enter__(self):
        self.sync()
        self.j0 = self.energy.joules_now() if self.metered else None
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.last_s = time.perf_counter() - self.t0
        if self.metered:
            self.joules += self.energy.joules_now() - self.j0
        return False

    def add(self, n_steps: int):
        self.steps += n_steps
        self.seconds += self.last_s

    def energy_dict(self) -> dict:
        if not self.metered:
            return {"energy_j": None, "energy_per_step_j": None,
                    "reason": (self.energy.result().get("reason") if self.energy is not None else "energy metering off")}
        return {"energy_j": self.joules, "energy_per_step_j": self.joules / self.steps if self.steps else None,
                "timed_steps": self.steps, "seconds": self.seconds,
                "avg_power_w": self.joules / self.seconds if self.seconds else None,
                "note": "meter read before and after each of this side's timed segments (warm-up excluded); "
                        "NVML energy is the whole card's, RAPL the whole package's"}


def run_bench(cfg, *, steps: int = 5, repeats: int = 3, compare_torch: bool = False, warmup: int = 2,
              progress=None, torch_threads: int | None = None, torch_device: str | None = None,
              random_weights: bool = False, check_matmul: bool | None = None) -> dict:
    """cfg: an LLMFinetuneConfig. Returns the bench record (JSON-able).

    torch_device: the twin's device (default: the one matching tinygrad's, perf/devices.py). random_weights:
    random init of the exact shapes instead of model.weights (for models whose weights are not installed;
    the record says so). check_matmul: time a matmul in the run's precision and set it beside the peak-table
    figure MFU is computed against (default: on GPUs, whose peak comes from a table)."""
    jitcache.enable()               # steps an earlier process captured load from $ZP_CACHE (engine/jitcache.py)
    threads = cpu_threads.enable()  # split CPU kernels run on every core
    t = cfg.train
    B, T, A = t.micro_batch_size, cfg.data.seq_len, t.grad_accum
    tokens_per_step = B * T * A
    say = progress or (lambda msg: None)
    dev = Device.DEFAULT
    weights_note = {"kind": "configured", "source": cfg.model.weights} if cfg.model.weights else {
        "kind": "random", "source": None, "note": f"random init (seed {t.seed}) of the config's shapes: model.weights is null"}
    if random_weights:
        shapes = (f"the exact shapes of {cfg.model.config}" if not cfg.model.overrides else
                  f"{cfg.model.config} with overrides {cfg.model.overrides} (not its published shapes)")
        weights_note = {"kind": "random", "source": None, "configured": cfg.model.weights,
                        "note": f"random init (seed {t.seed}) of {shapes}, not its published weights "
                                "(--random-weights): speed and memory only, not quality"}
        cfg = cfg.model_copy(deep=True)
        cfg.model.weights, cfg.model.tokenizer = None, "bytes"   # token ids are random draws: no tokenizer needed

    lora_spec = LoRASpec.from_section(cfg.lora.model_dump())
    if compare_torch and cfg.method == "lora" and lora_spec.base_quant != "none":
        raise ConfigError(f"--compare-torch builds a plain PyTorch twin; it has no lora.base_quant "
                          f"{lora_spec.base_quant} base. Benchmark without --compare-torch, or set lora.base_quant: none")
    if compare_torch:   # a twin device this PyTorch cannot use is refused before anything is built
        torch = torch_ref.require_torch()
        th_dev = torch_device or torch_device_for(dev)
        check_torch_device(torch, th_dev)

    tg_sync, tg_sync_how = tinygrad_sync(dev)
    alloc = AllocatorPeak().__enter__()
    try:
        t_build = time.perf_counter()
        lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
        model, mc = lm.model, lm.config
        params = trainable_params(model, cfg.method, lora_spec, t.seed, precision=t.precision)  # the base as the recipe keeps it
        tg_sync()
        build_s = time.perf_counter() - t_build
        after_build_bytes = alloc.bytes
        n_lora = count_lora_params(mc, lora_spec) if cfg.method == "lora" else 0
        fl = step_flops(mc, seq_len=T, tokens_per_step=tokens_per_step, method=cfg.method, n_lora=n_lora)
        total_steps = warmup + steps * repeats
        batches = make_batches(total_steps, A, B, T, mc.vocab_size, seed=t.seed)
        ecfg = EngineConfig(lr=t.lr, total_steps=total_steps, warmup_steps=0, min_lr_ratio=t.min_lr_ratio,
                            weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=A, precision=t.precision,
                            loss_scale=t.loss_scale, jit=t.jit)

        peak = device_peak(dev, t.precision)
        gpu = dev.split(":")[0].upper() not in ("CPU", "CLANG", "LLVM")
        if check_matmul if check_matmul is not None else gpu:
            n = 4096 if gpu else 512
            say(f"matmul {n}^3 {t.precision} on {dev} to check the peak")
            try:
                mm = matmul_flops(n, t.precision, device=dev)
                peak = check_peak(peak, mm["flops"], f"tinygrad {n}^3 {t.precision} matmul on {dev}, best of {mm['repeats']}")
            except Exception as e:   # a check that cannot run leaves the peak unchecked, with why
                peak = check_peak(peak, None, f"matmul failed: {type(e).__name__}: {str(e)[:160]}")

        tw = None
        if compare_torch:   # snapshot the starting weights before tinygrad trains them
            threads_before = torch.get_num_threads()
            if torch_threads:
                torch.set_num_threads(torch_threads)
            if th_dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(th_dev)
            base = {k: weight_numpy_f32(v) for k, v in state_dict(model).items()}   # a bf16 frozen base, exactly
            adapters = {k: v.numpy() for k, v in params.items()} if cfg.method == "lora" else None
            lora = ({"rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "targets": cfg.lora.targets}
                    if cfg.method == "lora" else None)
            if cfg.lora.dropout and cfg.method == "lora":
                say("note: LoRA dropout is not modelled in the torch twin; benchmarking without it on both sides")
            tmodel, tparams = torch_ref.build_torch_model(mc, base, lora=lora, adapters=adapters, dtype=t.precision,
                                                          device=th_dev)
            del base
            topt = torch_ref.make_optimizer(tparams, ecfg)
            tbatches = [[(torch.from_numpy(x.astype(np.int64)).to(th_dev), torch.from_numpy(y.astype(np.int64)).to(th_dev))
                         for x, y in mbs] for mbs in batches]
            th_sync, th_sync_how = torch_sync(torch, th_dev)
            tw = {"model": tmodel, "params": tparams, "opt": topt, "batches": tbatches, "device": th_dev}

        trainer = Trainer(params, lm_loss(model, t.activation_checkpointing, t.activation_checkpointing_k), ecfg,
                          **warm_start_args(model, params, method=cfg.method, lora=lora_spec,
                                            activation_checkpointing=t.activation_checkpointing,
                                            activation_checkpointing_k=t.activation_checkpointing_k))
        meter = PerfMeter(flops_per_step=fl.per_step, tokens_per_step=tokens_per_step, device=dev,
                          precision=t.precision, warmup_steps=warmup, peak=peak).start()
        tg_side = _Side(meter.energy, tg_sync)
        th_side = _Side(meter.energy, th_sync) if tw else None

        # warm-up: tinygrad's first calls build graphs, compile kernels and capture the JIT
        tg_losses, th_losses, tg_warm, th_warm = [], [], [], []
        warm_phases = []
        for i in range(warmup):
            say(f"tinygrad warm-up step {i + 1}/{warmup}")
            tg_sync()
            t0 = time.perf_counter()
            with TinygradPhases() as ph:   # where a cold step's time goes: schedule, lower+compile, run, the rest
                st = trainer.step(batches[i])
                tg_sync()
            dt = time.perf_counter() - t0
            warm_phases.append(ph.to_dict())
            meter.step(tokens_per_step, dt, st.loss)
            tg_warm.append(dt)
            tg_losses.append(st.loss)
        if tw:
            for i in range(warmup):
                th_sync()
                t0 = time.perf_counter()
                th_losses.append(torch_ref.train_step(tw["model"], tw["params"], tw["opt"], tw["batches"][i], ecfg,
                                                      lr_at(i, ecfg)))
                th_sync()
                th_warm.append(time.perf_counter() - t0)

        rounds = []
        k = warmup
        for r in range(repeats):
            say(f"round {r + 1}/{repeats}: {steps} steps each side")
            with tg_side:
                for i in range(steps):
                    s0 = time.perf_counter()
                    st = trainer.step(batches[k + i])
                    meter.step(tokens_per_step, time.perf_counter() - s0, st.loss)
                    tg_losses.append(st.loss)
            tg_side.add(steps)
            tg_s = tg_side.last_s / steps
            row = {"round": r + 1, "tinygrad_step_s": tg_s, "tinygrad_tokens_per_s": tokens_per_step / tg_s}
            if tw:
                with th_side:
                    for i in range(steps):
                        th_losses.append(torch_ref.train_step(tw["model"], tw["params"], tw["opt"], tw["batches"][k + i],
                                                              ecfg, lr_at(k + i, ecfg)))
                th_side.add(steps)
                th_s = th_side.last_s / steps
                row.update(torch_step_s=th_s, torch_tokens_per_s=tokens_per_step / th_s, ratio=th_s / tg_s)
            rounds.append(row)
            k += steps

        perf = meter.finish()
    finally:
        alloc.__exit__(None, None, None)
    tg_tps = [r["tinygrad_tokens_per_s"] for r in rounds]
    plan = llm_memory_plan(cfg.model, method=cfg.method, lora=lora_spec, precision=t.precision, micro_batch_size=B,
                           seq_len=T, grad_accum=A, activation_checkpointing=t.activation_checkpointing,
                           activation_checkpointing_k=t.activation_checkpointing_k)["memory"]
    measured = alloc.bytes
    rec = {
        "config": {"model": cfg.model.config, "weights": cfg.model.weights, "method": cfg.method,
                   "lora": cfg.lora.model_dump() if cfg.method == "lora" else None,
                   "micro_batch_size": B, "seq_len": T, "grad_accum": A, "precision": t.precision, "jit": t.jit,
                   "activation_checkpointing": t.activation_checkpointing},
        "weights": weights_note,
        "params_total": param_count(mc) + n_lora, "params_trainable": n_lora if cfg.method == "lora" else param_count(mc),
        "tokens_per_step": tokens_per_step, "steps": steps, "repeats": repeats, "warmup_steps": warmup,
        "data": "uniform random token ids, fixed seed (step time does not depend on token values)",
        "build_s": build_s, "flops": fl.to_dict(), "peak": peak,
        "tinygrad": {"device": dev, "first_step_s": tg_warm[0] if tg_warm else None,
                     "compile_s": sum(tg_warm), "warmup_step_s": tg_warm, "sync": tg_sync_how,
                     "warmup_phases": warm_phases,
                     "tokens_per_s": _stats(tg_tps), "mfu": perf["mfu"], "peak": perf["peak"],
                     "memory": {**perf["memory"], "allocator": alloc.to_dict(),
                                "after_build_bytes": after_build_bytes},
                     "energy": perf["energy"], "energy_timed": tg_side.energy_dict(), "losses": tg_losses,
                     "env": {k: os.environ[k] for k in ("BEAM", "JIT", "DEV", "CACHELEVEL", "PARALLEL") if k in os.environ},
                     # this process's start: "warm" when every step was replayed from $ZP_CACHE (engine/jitcache.py)
                     "warm_start": {"first_step_s": tg_warm[0] if tg_warm else None, **jitcache.report(trainer.jit_steps())},
                     "cpu_threads": threads,
                     # how CPU kernels were built and run (engine/cpu_kernels.py, engine/cpu_threads.py)
                     "cpu_kernels": {"rules": cpu_kernels.active(),
                                     "runner": "native" if cpu_threads.native_reason() is None
                                     else f"python ({cpu_threads.native_reason()})"}},
        "memory_plan": {"plan_bytes": plan, "measured_peak_bytes": measured,
                        "measured_over_plan": measured / plan["total_bytes"] if plan.get("total_bytes") else None,
                        "note": "plan: zpctl model info (shapes alone); measured: tinygrad's allocator high-water mark "
                                "(buffers held by tinygrad, LRU-cached free buffers included)"},
        "rounds": rounds, "perf": perf,
    }
    if tw:
        th_tps = [r["torch_tokens_per_s"] for r in rounds]
        med_th = float(np.median([r["torch_step_s"] for r in rounds]))
        rec["torch"] = {**torch_info(torch, tw["device"]), "sync": th_sync_how,
                        "first_step_s": th_warm[0] if th_warm else None, "warmup_step_s": th_warm,
                        "tokens_per_s": _stats(th_tps), "losses": th_losses, "memory": torch_memory(torch, tw["device"]),
                        "energy_timed": th_side.energy_dict(),
                        "mfu": (fl.per_step / med_th / peak["flops"]) if peak.get("flops") else None}
        rec["ratio_tinygrad_over_torch"] = _stats([r["ratio"] for r in rounds])
        rec["first_loss"] = {"tinygrad": tg_losses[0], "torch": th_losses[0],
                             "abs_diff": abs(tg_losses[0] - th_losses[0])}
        torch.set_num_threads(threads_before)   # process-wide setting: hand it back
    return rec
