"""One kernel's search, in its own process so `zpctl tune` can bound it with a timeout.

    python -m zeropoint.perf.tune_kernel IN.pkl OUT.pkl

IN holds (kernel AST, beam width, deadline in seconds). The search is tinygrad's BEAM search with tinygrad's own
pieces (its action list, its option scheduler, its compiler and its timer), run round by round against a deadline:
after every round the best option list found so far is written to OUT, so a search that runs out of time (or is
killed at the parent's timeout) still leaves its best result. tinygrad's `beam_search` has no deadline and returns
nothing until it is done, which on a loaded 2-core box took 28 minutes for one small model. Candidates are timed on
the parallel CPU runtime of engine/cpu_threads.py, the one the kernels will run on."""
from __future__ import annotations

import math
import pickle
import sys
import time


def search(ast, beam: int, deadline_s: float, out: str | None = None) -> tuple[tuple, float, float, int]:
    """-> (best options, their time, the default kernel's time, candidates timed)."""
    from tinygrad import Device
    from tinygrad.codegen import to_program
    from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
    from tinygrad.codegen.opt.postrange import Scheduler, args_from_ast
    from tinygrad.codegen.opt.search import _time_program, get_kernel_actions
    t_end = time.perf_counter() + deadline_s
    ren = Device[Device.DEFAULT].renderer
    rawbufs, var_vals = args_from_ast(ast, ren.target.device)
    rawbufs = [b.ensure_allocated() for b in rawbufs]

    def timed(k) -> float:
        try:
            prg = to_program(k.copy().get_optimized_ast(), ren)
            return float(min(_time_program(prg, var_vals, rawbufs, allow_test_size=False, cnt=3)))
        except Exception:   # an option list that does not compile or run here is no candidate
            return math.inf

    start = Scheduler(ast, ren)
    start.convert_loop_to_global()
    default = hand_coded_optimizations(start.copy())
    best_k, best_t = default, timed(default)
    default_t, n = best_t, 1

    def save():
        if out:
            with open(out, "wb") as f:
                pickle.dump((tuple(best_k.applied_opts), best_t, default_t, n), f)
    save()
    # BEAM's start (no options) and tinygrad's own choice, so the search can also refine the default
    frontier, seen, last_round = [start, default], {tuple(default.applied_opts)}, math.inf
    while frontier and time.perf_counter() < t_end:
        scored = []
        for s in frontier:
            for k in get_kernel_actions(s, include_0=False).values():
                sig = tuple(k.applied_opts)
                if sig in seen:
                    continue
                seen.add(sig)
                if time.perf_counter() >= t_end:
                    break
                scored.append((timed(k), k))
                n += 1
        scored = sorted([x for x in scored if math.isfinite(x[0])], key=lambda x: x[0])
        if not scored:
            break
        if scored[0][0] < best_t:
            best_t, best_k = scored[0]
            save()
        if scored[0][0] >= last_round * 0.99:
            break   # this round did not beat the last one: tinygrad's BEAM stops here too
        last_round = scored[0][0]
        frontier = [k for _, k in scored[:beam]]
    save()
    return tuple(best_k.applied_opts), best_t, default_t, n


def main(argv: list[str]) -> int:
    src, dst = argv
    with open(src, "rb") as f:
        ast, beam, deadline_s = pickle.load(f)
    from ..engine import cpu_threads
    cpu_threads.enable()
    search(ast, beam, deadline_s, dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
