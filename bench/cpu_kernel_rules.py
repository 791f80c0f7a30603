"""What engine/cpu_kernels.py's rules do to each kernel of a training step, against tinygrad's own heuristic.

    PYTHONPATH=src python bench/cpu_kernel_rules.py configs/llm/smollm2-135m_lora.yaml [--top 20] [--json]

Captures the recipe's step on tinygrad's kernels, then lowers every distinct kernel twice (tinygrad's heuristic, the
rules) and times each alone: best CPU time of a few runs on scratch buffers (perf/tune.py's timer), weighed by calls
per optimizer step. Single-threaded CPU time, so the rules' thread splits earn nothing here; the step benchmarks
(`zpctl bench --compare torch`) measure the whole effect. Prints the heaviest kernels and the step's totals.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ["ZP_TUNED"] = "0"                 # tinygrad's kernels and the rules', never a tuned one
os.environ["ZP_CPU_KERNELS"] = "tinygrad"    # the step is captured on tinygrad's heuristic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from tinygrad.codegen import do_to_program

    from zeropoint.engine import Trainer, cpu_kernels, cpu_threads, jitcache
    from zeropoint.perf import tune
    from zeropoint.recipes import load_config
    jitcache.enable()
    cpu_threads.enable()
    cfg, _ = load_config(a.config, [])
    params, loss_fn, ecfg, batches = tune.recipe_step(cfg, 2)
    with tune.recording_kernels() as asts:
        trainer = Trainer(params, loss_fn, ecfg)
        for b in batches:
            trainer.step(b)
    rows = []
    for e in tune._step_kernels(trainer, asts).values():
        ast, ren = e["ast"], e["ren"]
        cpu_kernels._use(False)
        theirs = do_to_program(ast, ren)
        cpu_kernels._use(True)
        ours = do_to_program(ast, ren)
        t0, t1 = tune._time_kernel(theirs, ast), tune._time_kernel(ours, ast)
        rows.append({"kernel": tune._plain(theirs.arg.name), "with_rules": tune._plain(ours.arg.name),
                     "calls_per_step": e["calls"], "tinygrad_s": t0 * e["calls"], "rules_s": t1 * e["calls"],
                     "rules_opts": [str(o) for o in ours.src[0].arg.applied_opts]})
    cpu_kernels._use(False)
    rows.sort(key=lambda r: -r["tinygrad_s"])
    total0, total1 = sum(r["tinygrad_s"] for r in rows), sum(r["rules_s"] for r in rows)
    out = {"config": a.config, "rules": cpu_kernels.RULES, "kernels": len(rows), "tinygrad_cpu_s_per_step": total0,
           "rules_cpu_s_per_step": total1, "speedup": total0 / total1 if total1 else None,
           "load_average": os.getloadavg(), "rows": rows}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    for r in rows[:a.top]:
        print(f"{r['tinygrad_s'] * 1e3:9.2f} -> {r['rules_s'] * 1e3:9.2f} ms/step  x{r['tinygrad_s'] / max(r['rules_s'], 1e-12):5.2f}"
              f"  {r['calls_per_step']:3d} calls  {r['kernel'][:40]:40s} -> {r['with_rules'][:40]}")
    print(f"{len(rows)} kernels; CPU s per step: tinygrad {total0:.4f}, rules {total1:.4f} ({out['speedup']:.2f}x); "
          f"load {out['load_average'][0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
