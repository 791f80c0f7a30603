"""Where tinygrad's time goes while a block runs: scheduling, lowering + compiling kernels, running them, the rest.

    with TinygradPhases() as ph:
        trainer.step(batch)            # a first step: builds graphs, schedules, compiles, runs
    ph.to_dict()   # {"schedule": {"wall_s", "cpu_s", "calls", "kernels"}, "lower_compile": {...}, "run": ..., "other": ...}

Wraps tinygrad 0.14's own entry points for the duration of the block (and puts them back after):
- schedule: `Tensor.linear_with_vars` (rewriting the lazy graph into kernels), with the number of kernels;
- lower_compile: `realize.lower_and_compile` (optimising, rendering and compiling the kernels not seen before; done
  in a worker pool when PARALLEL > 0, so this is the parent's wall time of that phase), with programs built;
- run: the rest of `realize.run_linear` (launching the kernels, waiting where asked, copies);
- other: what is left of the block (Python building the forward and backward graphs, JIT capture bookkeeping).
CPU seconds are this process's (a worker pool's are not in them); wall seconds are what a user waits.
"""
from __future__ import annotations

import sys
import time

import tinygrad.engine.realize as realize
from tinygrad import Tensor
from tinygrad.uop.ops import Ops


class TinygradPhases:
    PHASES = ("schedule", "lower_compile", "run")

    def __init__(self):
        self.wall = dict.fromkeys(self.PHASES, 0.0)
        self.cpu = dict.fromkeys(self.PHASES, 0.0)
        self.calls = dict.fromkeys(self.PHASES, 0)
        self.kernels = 0
        self.programs = 0
        self._saved = []
        self._depth = {"run": 0}

    def _wrap(self, owner, attr, phase, after=None, nested_in_run=False):
        orig = getattr(owner, attr)
        self._saved.append((owner, attr, orig))
        ph = self

        def timed(*a, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            out = orig(*a, **kw)
            dw, dc = time.perf_counter() - t0, time.process_time() - c0
            ph.wall[phase] += dw
            ph.cpu[phase] += dc
            ph.calls[phase] += 1
            if nested_in_run and ph._depth["run"]:   # lowering inside run_linear: not run time
                ph._nested_w += dw
                ph._nested_c += dc
            if after:
                after(a, out)
            return out
        setattr(owner, attr, timed)

    def __enter__(self) -> "TinygradPhases":
        self._nested_w = self._nested_c = 0.0

        def count_kernels(args, out):
            self.kernels += sum(1 for c in out[0].src if c.op is Ops.CALL)

        def count_programs(args, out):
            self.programs += sum(1 for c in out.src if c.op is Ops.CALL)

        self._wrap(Tensor, "linear_with_vars", "schedule", count_kernels)
        self._wrap(realize, "lower_and_compile", "lower_compile", None, nested_in_run=True)
        orig_run = realize.run_linear
        self._saved.append((realize, "run_linear", orig_run))
        ph = self

        def run_linear(*a, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            nw, nc = ph._nested_w, ph._nested_c
            ph._depth["run"] += 1
            try:
                return orig_run(*a, **kw)
            finally:
                ph._depth["run"] -= 1
                ph.wall["run"] += time.perf_counter() - t0 - (ph._nested_w - nw)
                ph.cpu["run"] += time.process_time() - c0 - (ph._nested_c - nc)
                ph.calls["run"] += 1
        realize.run_linear = run_linear
        # tensor.py and engine/jit.py import run_linear by name: point those names at the wrapper too
        for name, mod in list(sys.modules.items()):
            if name.startswith("tinygrad.") and mod is not realize and getattr(mod, "run_linear", None) is orig_run:
                self._saved.append((mod, "run_linear", orig_run))
                mod.run_linear = run_linear
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.total_wall, self.total_cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        for owner, attr, orig in reversed(self._saved):
            setattr(owner, attr, orig)
        self._saved.clear()

    def to_dict(self) -> dict:
        out = {p: {"wall_s": round(self.wall[p], 3), "cpu_s": round(self.cpu[p], 3), "calls": self.calls[p]}
               for p in self.PHASES}
        out["schedule"]["kernels"] = self.kernels
        out["other"] = {"wall_s": round(self.total_wall - sum(self.wall.values()), 3),
                        "cpu_s": round(self.total_cpu - sum(self.cpu.values()), 3)}
        out["total"] = {"wall_s": round(self.total_wall, 3), "cpu_s": round(self.total_cpu, 3)}
        return out
