"""Cold against warm start of a recipe's training step, each in a fresh process on one fresh cache.

    rec = cold_and_warm("configs/llm/smollm2-135m_lora.yaml", ["train.micro_batch_size=2"])

The first child process finds an empty $ZP_CACHE: it compiles every kernel and captures the steps (cold). The
second finds what the first stored (warm). Each reports the wall time from its own start (interpreter, imports,
model build, everything) to the end of its first optimizer step, how long that step took, and what the caches did.
Run as `python -m zeropoint.perf.startup CONFIG [--set k=v ...]` it is one such child and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARK = "ZP_STARTUP "


def first_step(config: str, overrides: list[str]) -> dict:
    """Build the recipe's model and engine exactly as `zpctl bench` does and take one optimizer step."""
    t0 = time.perf_counter()
    from ..config import load_config
    from ..engine import EngineConfig, Trainer, cpu_threads, jitcache
    from ..recipes.llm_finetune import build_model, lm_loss, trainable_params, warm_start_args
    from .bench import make_batches
    jitcache.enable()
    cpu_threads.enable()
    cfg, _ = load_config(config, overrides)
    t = cfg.train
    t_build = time.perf_counter()
    model, mc, _tok = build_model(cfg)
    params = trainable_params(model, cfg)
    build_s = time.perf_counter() - t_build
    ecfg = EngineConfig(lr=t.lr, total_steps=10, warmup_steps=0, min_lr_ratio=t.min_lr_ratio,
                        weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                        precision=t.precision, loss_scale=t.loss_scale, jit=t.jit)
    trainer = Trainer(params, lm_loss(model), ecfg, **warm_start_args(model, cfg, params))
    batch = make_batches(1, t.grad_accum, t.micro_batch_size, cfg.data.seq_len, mc.vocab_size, seed=t.seed)[0]
    st = trainer.step(batch)
    return {"first_step_s": st.step_s, "loss": st.loss, "build_s": build_s, "in_process_s": time.perf_counter() - t0,
            "process_age_s": jitcache.process_age_s(), "cache": jitcache.report()}


def _child(config: str, overrides: list[str], cache: Path, timeout: float) -> dict:
    env = dict(os.environ, ZP_CACHE=str(cache))
    cmd = [sys.executable, "-m", "zeropoint.perf.startup", str(config)] + [a for o in overrides for a in ("--set", o)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    line = next((ln[len(MARK):] for ln in p.stdout.splitlines() if ln.startswith(MARK)), None)
    if p.returncode != 0 or line is None:
        from ..errors import ZeropointError
        raise ZeropointError(f"startup measurement failed (exit {p.returncode}): {p.stderr.strip()[-800:]}")
    rec = json.loads(line)
    rec["process_wall_s"] = wall   # spawn to exit: the first step is the last thing the child does
    return rec


def cold_and_warm(config: str, overrides: list[str] | None = None, *, timeout: float = 3600) -> dict:
    overrides = list(overrides or [])
    with tempfile.TemporaryDirectory(prefix="zp-startup-") as d:
        cache = Path(d) / "cache"
        cold = _child(config, overrides, cache, timeout)
        warm = _child(config, overrides, cache, timeout)
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    return {"cold": cold, "warm": warm, "cache_bytes": size,
            "speedup_first_step": cold["first_step_s"] / warm["first_step_s"] if warm["first_step_s"] else None,
            "speedup_to_first_step": cold["process_wall_s"] / warm["process_wall_s"] if warm["process_wall_s"] else None,
            "same_first_loss": cold["loss"] == warm["loss"],
            "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "method": "two fresh processes on one empty cache: the first compiles and stores, the second loads"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one optimizer step of a recipe, timed from process start")
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)
    rec = first_step(a.config, a.overrides)
    print(MARK + json.dumps(rec, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
