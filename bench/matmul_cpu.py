"""Why tinygrad's CPU matmul is far from numpy's: kernel choice and threads, measured one at a time.

    PYTHONPATH=src python bench/matmul_cpu.py [--n 1024] [--transposed]

fp32 C = A @ B (or A @ W.T with --transposed, the layout of a Linear layer), n x n x n. Rows:
numpy (its BLAS, all cores); tinygrad's own kernel (its heuristic's register tile) on one thread and on all
threads (engine/cpu_threads.py); the best register tile of the search `zpctl tune` runs (perf/tune_kernel.py:
UPCAST on both output axes x UNROLL of the reduce, then tinygrad's THREAD split) on one and on all threads.
Each figure is the best wall time of several runs; the load average is printed with them. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--transposed", action="store_true")
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds for the tile search")
    a = ap.parse_args()
    import numpy as np
    from tinygrad import Device, Tensor
    from tinygrad.codegen import to_program
    from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
    from tinygrad.codegen.opt.postrange import Scheduler, args_from_ast
    from tinygrad.engine.realize import get_runtime
    from tinygrad.uop.ops import Ops

    from zeropoint.engine import cpu_threads
    from zeropoint.perf.tune_kernel import search
    n = a.n
    flop = 2 * n ** 3
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n), dtype=np.float32)
    B = rng.standard_normal((n, n), dtype=np.float32)
    out = {"n": n, "layout": "A @ W.T" if a.transposed else "A @ B", "cpus": os.cpu_count(),
           "load_before": os.getloadavg()}
    best = min(_t(lambda: A @ (B.T if a.transposed else B)) for _ in range(5))
    out["numpy_gflops"] = flop / best / 1e9

    ta, tw = Tensor.empty(n, n).realize(), Tensor.empty(n, n).realize()
    lin = (ta @ (tw.T if a.transposed else tw)).schedule_linear()
    ast = next(c.src[0] for c in lin.src if c.src[0].op is Ops.SINK)
    ren = Device[Device.DEFAULT].renderer
    bufs, var_vals = args_from_ast(ast, Device.DEFAULT)
    bufs = [b.ensure_allocated() for b in bufs]

    def gflops(k) -> float:
        prg = to_program(k.get_optimized_ast(), ren)
        rt = get_runtime(Device.DEFAULT, prg)
        gs, ls = prg.arg.launch_dims(var_vals)
        args = [bufs[i]._buf for i in prg.arg.globals]
        t = min(_t(lambda: rt(*args, global_size=gs, local_size=ls, vals=prg.arg.vals(var_vals), wait=True))
                for _ in range(5))
        return flop / t / 1e9
    start = Scheduler(ast, ren)
    start.convert_loop_to_global()
    default = hand_coded_optimizations(start.copy())
    t0 = time.perf_counter()
    opts, _, _, tried = search(ast, beam=2, deadline_s=a.deadline)
    tuned = start.copy()
    for o in opts:
        tuned.apply_opt(o)
    out["search"] = {"seconds": round(time.perf_counter() - t0, 1), "candidates": tried, "opts": [str(o) for o in opts],
                     "default_opts": [str(o) for o in default.applied_opts]}
    for threads in (1, os.cpu_count() or 1):
        os.environ["ZP_CPU_THREADS"] = str(threads)
        cpu_threads.enable()
        out[f"tinygrad_default_{threads}t_gflops"] = gflops(default)
        out[f"tinygrad_tuned_{threads}t_gflops"] = gflops(tuned)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out))
    return 0


def _t(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
