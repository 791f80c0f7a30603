"""The training loop every recipe calls: steps, progress bar, per-step evidence, eval and checkpoint cadence.

    fit(trainer, get_batches, steps=cfg.steps, start_step=0, run=run, tokens_per_step=B*T*accum,
        eval_every=20, eval_fn=lambda step: {"val_loss": ..., "val_ppl": ...},
        ckpt_every=20, save_ckpt=lambda step: ...)

`get_batches(step)` returns the `grad_accum` micro-batches for optimizer step `step` (0-based) and must be a
pure function of the step (plus the recipe's seed), so a resumed run sees exactly the batches it would have.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..perf.hooks import perf_begin, perf_end, perf_step_fields
from . import jitcache
from .trainer import StepStats, Trainer


def make_progress(console: Console | None = None) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console or Console(stderr=True), transient=False)


def fit(trainer: Trainer, get_batches: Callable[[int], Sequence], *, steps: int, start_step: int = 0, run=None,
        tokens_per_step: int | None = None, eval_every: int = 0, eval_fn: Callable[[int], dict] | None = None,
        ckpt_every: int = 0, save_ckpt: Callable[[int], object] | None = None, progress: bool = True,
        description: str = "train") -> list[StepStats]:
    """Run optimizer steps start_step+1..steps. Logs every step to `run`, evaluates and checkpoints on cadence
    and always at the last step. Returns the StepStats of the steps it ran."""
    history: list[StepStats] = []
    prog = make_progress() if progress else None
    task = prog.add_task(description, total=steps, completed=start_step, loss="-", tps="-") if prog else None
    if prog:
        prog.start()
    meter = perf_begin(run)   # perf: energy meter; perf.json + perf.png at the end (perf/hooks.py)
    try:
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            st = trainer.step(get_batches(step))
            wall = time.perf_counter() - t0
            tps = tokens_per_step / wall if tokens_per_step else None
            extra = {"lr": st.lr, "grad_norm": st.grad_norm if st.grad_norm is not None and math.isfinite(st.grad_norm) else None,
                     "skipped": st.skipped, "loss_scale": st.loss_scale, **perf_step_fields()}
            if run is not None:
                run.log_step(st.step, st.loss, wall * 1000.0, tps, **extra)
                if not history:   # cold or warm start: what the compile caches did up to the first step (perf.json)
                    run.event("warm_start", first_step_s=wall, process_age_s=jitcache.process_age_s(), **jitcache.report())
            history.append(st)
            if prog:
                prog.update(task, completed=st.step, loss=f"{st.loss:.4f}", tps=f"{tps:,.0f}" if tps else "-")
            last = st.step == steps
            if eval_fn and ((eval_every and st.step % eval_every == 0) or last):
                ev = eval_fn(st.step)
                if run is not None:
                    run.event("eval", step=st.step, **ev)
            if save_ckpt and ((ckpt_every and st.step % ckpt_every == 0) or last):
                path = save_ckpt(st.step)
                if run is not None:
                    run.event("checkpoint", step=st.step, path=str(path))
    finally:
        if prog:
            prog.stop()
    perf_end(run, meter)
    return history


def summarize(history: list[StepStats]) -> dict:
    return {"steps": len(history), "first_loss": history[0].loss if history else None,
            "last_loss": history[-1].loss if history else None,
            "skipped_steps": sum(s.skipped for s in history),
            "first_step_s": history[0].step_s if history else None}


__all__ = ["fit", "summarize", "make_progress", "asdict"]
