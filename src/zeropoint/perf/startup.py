"""Cold against warm start of a recipe's training step, each in a fresh process on one fresh cache.

    rec = cold_and_warm([sys.executable, "-m", "zeropoint.cli.startup_probe", "configs/llm/tiny_lora.yaml"])

The first child process finds an empty $ZP_CACHE: it compiles every kernel and captures the steps (cold). The
second finds what the first stored (warm). Each reports the wall time from its own start (interpreter, imports,
model build, everything) to the end of its first optimizer step, how long that step took, and what the caches did.
The child is a command (`zeropoint.cli.startup_probe` loads the recipe config and calls `first_step`), so this
module needs no recipe.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from ..engine import EngineConfig, Trainer, cpu_threads, jitcache
from ..errors import ZeropointError
from ..models.llm import build_llm, lm_loss, trainable_params, warm_start_args
from ..models.lora import LoRASpec
from .bench import make_batches

MARK = "ZP_STARTUP "


def first_step(cfg) -> dict:
    """Build the recipe's model and engine exactly as `zpctl bench` does and take one optimizer step.
    cfg: an LLMFinetuneConfig."""
    t0 = time.perf_counter()
    jitcache.enable()
    cpu_threads.enable()
    t = cfg.train
    t_build = time.perf_counter()
    lora = LoRASpec.from_section(cfg.lora.model_dump())
    lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
    model, mc = lm.model, lm.config
    params = trainable_params(model, cfg.method, lora, t.seed, precision=t.precision)   # the base as the recipe keeps it
    build_s = time.perf_counter() - t_build
    ecfg = EngineConfig(lr=t.lr, total_steps=10, warmup_steps=0, min_lr_ratio=t.min_lr_ratio,
                        weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                        precision=t.precision, loss_scale=t.loss_scale, jit=t.jit)
    ac, k = t.activation_checkpointing, t.activation_checkpointing_k
    trainer = Trainer(params, lm_loss(model, ac, k), ecfg,
                      **warm_start_args(model, params, method=cfg.method, lora=lora, activation_checkpointing=ac,
                                        activation_checkpointing_k=k))
    batch = make_batches(1, t.grad_accum, t.micro_batch_size, cfg.data.seq_len, mc.vocab_size, seed=t.seed)[0]
    st = trainer.step(batch)
    return {"first_step_s": st.step_s, "loss": st.loss, "build_s": build_s, "in_process_s": time.perf_counter() - t0,
            "process_age_s": jitcache.process_age_s(), "cache": jitcache.report(trainer.jit_steps())}


def _child(cmd: list[str], cache: Path, timeout: float) -> dict:
    env = dict(os.environ, ZP_CACHE=str(cache))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    line = next((ln[len(MARK):] for ln in p.stdout.splitlines() if ln.startswith(MARK)), None)
    if p.returncode != 0 or line is None:
        raise ZeropointError(f"startup measurement failed (exit {p.returncode}): {p.stderr.strip()[-800:]}")
    rec = json.loads(line)
    rec["process_wall_s"] = wall   # spawn to exit: the first step is the last thing the child does
    return rec


def cold_and_warm(child_cmd: list[str], *, timeout: float = 3600) -> dict:
    """Run `child_cmd` (a process that prints `MARK` + first_step's JSON) twice on one empty cache."""
    with tempfile.TemporaryDirectory(prefix="zp-startup-") as d:
        cache = Path(d) / "cache"
        cold = _child(child_cmd, cache, timeout)
        warm = _child(child_cmd, cache, timeout)
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return {"cold": cold, "warm": warm, "cache_bytes": size,
            "speedup_first_step": cold["first_step_s"] / warm["first_step_s"] if warm["first_step_s"] else None,
            "speedup_to_first_step": cold["process_wall_s"] / warm["process_wall_s"] if warm["process_wall_s"] else None,
            "same_first_loss": cold["loss"] == warm["loss"],
            "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "method": "two fresh processes on one empty cache: the first compiles and stores, the second loads"}
