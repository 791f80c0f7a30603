"""One kernel's search, in its own process so `zpctl tune` can bound it with a timeout.

    python -m zeropoint.perf.tune_kernel IN.pkl OUT.pkl

IN holds (kernel AST, beam width, deadline in seconds). Two stages, both built from tinygrad's own pieces (its
option scheduler, its compiler, its action list), against a deadline:

1. register tiles: for a reducing kernel (matmuls and their backward), every combination of UPCAST on its last two
   output axes and UNROLL on its reduce axis, then the THREAD split tinygrad's heuristic would add. On this CPU
   tinygrad's heuristic picks 4x3 or 4x4 tiles; an 8x8 tile ran a 256x576x1536 matmul 3.6x faster;
2. BEAM rounds from the best so far (tinygrad's action list, `beam` kept per round) while time remains.

Candidates are compared by the CPU time they take (best of a few runs): on a shared machine that is steadier than
wall time, and for a split kernel it is the work of all its parts. After every improvement the best option list
is written to OUT, so a search that runs out of time (or is killed at the parent's timeout) still leaves its result.
tinygrad's `beam_search` has no deadline and returns nothing until it is done (28 minutes for one small model's
step on a loaded 2-core box)."""
from __future__ import annotations

import itertools
import math
import pickle
import sys
import time

import tinygrad.codegen.opt.heuristic as heuristic
from tinygrad import Device
from tinygrad.codegen import to_program
from tinygrad.codegen.opt.postrange import Scheduler, args_from_ast
from tinygrad.codegen.opt.search import get_kernel_actions
from tinygrad.engine.realize import get_runtime
from tinygrad.uop.ops import AxisType

from ..engine import cpu_kernels


def cpu_seconds(prg, rawbufs, var_vals, min_total: float = 0.05, max_runs: int = 20) -> float:
    """Best CPU time of one kernel over a few runs (at least `min_total` s of runs, at most `max_runs`)."""
    rt = get_runtime(rawbufs[0].device, prg, cache=False)
    gs, ls = prg.arg.launch_dims(var_vals)
    bufs = [rawbufs[i]._buf for i in prg.arg.globals]
    best, total, n = math.inf, 0.0, 0
    while n < max_runs and (n < 2 or (n < 3 and best < 0.1) or total < min_total):
        c = time.process_time()
        rt(*bufs, global_size=gs, local_size=ls, vals=prg.arg.vals(var_vals), wait=True)
        dt = time.process_time() - c
        best, total, n = min(best, dt), total + dt, n + 1
    return best


def search(ast, beam: int, deadline_s: float, out: str | None = None) -> tuple[tuple, float, float, int]:
    """-> (best options, their CPU time, the default kernel's CPU time, candidates timed)."""
    t_end = time.perf_counter() + deadline_s
    ren = Device[Device.DEFAULT].renderer
    rawbufs, var_vals = args_from_ast(ast, ren.target.device)
    rawbufs = [b.ensure_allocated() for b in rawbufs]
    seen: set = set()

    def timed(k) -> float:
        seen.add(tuple(k.applied_opts))
        try:
            return cpu_seconds(to_program(k.copy().get_optimized_ast(), ren), rawbufs, var_vals)
        except Exception:   # an option list that does not compile or run here is no candidate
            return math.inf

    start = Scheduler(ast, ren)
    start.convert_loop_to_global()
    default = heuristic.hand_coded_optimizations(start.copy())   # what this process's rules build (engine/cpu_kernels.py)
    best_k, best_t = default, timed(default)
    default_t, n = best_t, 1

    def save():
        if out:
            with open(out, "wb") as f:
                pickle.dump((tuple(best_k.applied_opts), best_t, default_t, n), f)
    save()

    # 1. register tiles of reducing kernels
    outs = start.axes_of(AxisType.WEAK, AxisType.GLOBAL)
    if start.axes_of(AxisType.REDUCE) and outs:
        a1, a0 = outs[-1], (outs[-2] if len(outs) > 1 else None)
        grid = [g for g in itertools.product([1, 2, 4, 8, 16], [1, 2, 4, 8] if a0 is not None else [1], [0, 4, 8])
                if g[0] * g[1] <= 128]
        # most promising first, so a search cut short by its deadline still tried them: 64 to 128 accumulators
        # (with 16-wide vector loads the 16x8 and 8x16 tiles measured best on this CPU), a 4-way unrolled reduce
        grid.sort(key=lambda g: (abs(math.log2(g[0] * g[1]) - 6.5), g[2] != 4, -g[0]))
        for u1, u0, unroll in grid:
            if time.perf_counter() >= t_end:
                break
            if (k := cpu_kernels.tiled(start, a1, a0, u1, u0, unroll)) is None:
                continue
            k = cpu_kernels.threaded(k)   # tinygrad's own last step: split an output axis over the CPU threads
            if tuple(k.applied_opts) in seen:
                continue
            t = timed(k)
            n += 1
            if t < best_t:
                best_k, best_t = k, t
                save()

    # 2. BEAM rounds from the best so far
    frontier, last_round = [best_k], best_t
    while frontier and time.perf_counter() < t_end:
        scored = []
        for s in frontier:
            for k in get_kernel_actions(s, include_0=False).values():
                if time.perf_counter() >= t_end:
                    break
                if tuple(k.applied_opts) in seen:
                    continue
                scored.append((timed(k), k))
                n += 1
        scored = sorted([x for x in scored if math.isfinite(x[0])], key=lambda x: x[0])
        if not scored or scored[0][0] >= last_round * 0.99:
            break   # this round did not beat the last one: tinygrad's BEAM stops here too
        if scored[0][0] < best_t:
            best_t, best_k = scored[0]
            save()
        last_round = scored[0][0]
        frontier = [k for _, k in scored[:beam]]
    save()
    return tuple(best_k.applied_opts), best_t, default_t, n


def main(argv: list[str]) -> int:
    src, dst = argv
    cpu_kernels.enable()
    with open(src, "rb") as f:
        ast, beam, deadline_s = pickle.load(f)
    search(ast, beam, deadline_s, dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
