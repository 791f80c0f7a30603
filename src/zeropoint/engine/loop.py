"""The training loop every recipe calls: steps, progress bar, per-step evidence, eval and checkpoint cadence.

    fit(trainer, get_batches, steps=cfg.steps, start_step=0, run=run, items_per_step=B*T*accum, unit="tokens",
        eval_every=20, eval_fn=lambda step: {"val_loss": ..., "val_ppl": ...},
        ckpt_every=20, save_ckpt=lambda step: ...)

`get_batches(step)` returns the `grad_accum` micro-batches for optimizer step `step` (0-based) and must be a
pure function of the step (plus the recipe's seed), so a resumed run sees exactly the batches it would have.
`items_per_step` and `unit` name what a step processes ("tokens" for a language model, "images" for a vision
one): the progress bar shows that unit per second and each step's evidence row holds `<unit>_per_s`.
`hooks` (a `RunHooks`) is what else happens around the run; recipes pass `perf.hooks.PERF_HOOKS` (energy meter,
memory per step, perf.json), so the engine imports nothing above it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import jitcache
from .trainer import StepStats, Trainer


@dataclass(frozen=True)
class RunHooks:
    """Calls `fit` makes besides training: `begin(run) -> state` before the first step, `step_fields()` merged
    into every step's evidence row, `end(run, state)` after the last step. Each must never break a run."""
    begin: Callable[[object], object] = lambda run: None
    step_fields: Callable[[], dict] = dict
    end: Callable[[object, object], object] = lambda run, state: None


NO_HOOKS = RunHooks()


RATE_LABELS = {"tokens": "tok/s"}   # any other unit is shown as "<unit>/s"


def make_progress(console: Console | None = None, unit: str = "tokens") -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"),
                    TextColumn("{task.fields[tps]} " + RATE_LABELS.get(unit, f"{unit}/s")),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console or Console(stderr=True), transient=False)


def fit(trainer: Trainer, get_batches: Callable[[int], Sequence], *, steps: int, start_step: int = 0, run=None,
        items_per_step: int | None = None, unit: str = "tokens", eval_every: int = 0, eval_fn: Callable[[int], dict] | None = None,
        ckpt_every: int = 0, save_ckpt: Callable[[int], object] | None = None, progress: bool = True,
        description: str = "train", hooks: RunHooks = NO_HOOKS) -> list[StepStats]:
    """Run optimizer steps start_step+1..steps. Logs every step to `run`, evaluates and checkpoints on cadence
    and always at the last step. Returns the StepStats of the steps it ran."""
    history: list[StepStats] = []
    prog = make_progress(unit=unit) if progress else None
    task = prog.add_task(description, total=steps, completed=start_step, loss="-", tps="-") if prog else None
    if prog:
        prog.start()
    state = hooks.begin(run)
    try:
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            st = trainer.step(get_batches(step))
            wall = time.perf_counter() - t0
            tps = items_per_step / wall if items_per_step else None
            extra = {"lr": st.lr, "grad_norm": st.grad_norm if st.grad_norm is not None and math.isfinite(st.grad_norm) else None,
                     "skipped": st.skipped, "loss_scale": st.loss_scale, **hooks.step_fields()}
            if run is not None:
                run.log_step(st.step, st.loss, wall * 1000.0, tps, unit=unit, **extra)
                if not history:   # cold or warm start: what the compile caches did up to the first step (perf.json)
                    run.event("warm_start", first_step_s=wall, process_age_s=jitcache.process_age_s(), **jitcache.report(trainer.jit_steps()))
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
    hooks.end(run, state)
    return history
