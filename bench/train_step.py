"""Training-step throughput, Zeropoint (tinygrad) vs PyTorch CPU eager, on the same model, batch and precision.

    PYTHONPATH=src python bench/train_step.py                 # tiny GPT-class (~0.86M) and SmolLM2-135M LoRA
    PYTHONPATH=src python bench/train_step.py --only tiny --steps 10 --repeats 5 --out /tmp/bench.json

One process per model; inside it the two frameworks alternate round by round (perf/bench.py), so the ratio
is measured under the same machine load. Prints tokens/s of both, the ratio (min/median/max over rounds)
and tinygrad's first-step time (graph building + kernel compilation + JIT capture). Needs the optional
PyTorch extra (torch==2.13.0) and, for SmolLM2, the installed weights.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CASES = {
    "tiny": (ROOT / "bench/configs/tiny_gpt.yaml", []),
    "smollm2-lora": (ROOT / "configs/llm/smollm2-135m_lora.yaml", []),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(CASES), action="append", help="run only this case (repeatable)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override k=v for every case")
    ap.add_argument("--no-torch", action="store_true", help="tinygrad only")
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own choice); on an "
                    "oversubscribed machine OpenMP threads that wait on each other make torch's times erratic")
    ap.add_argument("--out", type=Path, help="write all records as JSON here")
    args = ap.parse_args()

    from zeropoint.recipes import load_config
    from zeropoint.perf.bench import run_bench
    from zeropoint.scope import require_real_compute
    require_real_compute(False)
    results = {}
    for name in args.only or list(CASES):
        path, extra = CASES[name]
        cfg, _ = load_config(path, extra + args.overrides)
        print(f"== {name}: {path.relative_to(ROOT)}", file=sys.stderr, flush=True)
        rec = run_bench(cfg, steps=args.steps, repeats=args.repeats, compare_torch=not args.no_torch,
                        torch_threads=args.torch_threads,
                        progress=lambda m: print(f"   {m}", file=sys.stderr, flush=True))
        results[name] = rec
        tg = rec["tinygrad"]
        line = (f"{name:13s} params {rec['params_total']:>11,} trainable {rec['params_trainable']:>11,} "
                f"tok/step {rec['tokens_per_step']:>5}  tinygrad {tg['tokens_per_s']['median']:>9,.0f} tok/s "
                f"(first step {tg['first_step_s']:.1f} s, compile {tg['compile_s']:.1f} s, MFU {tg['mfu'] or 0:.2%})")
        if "torch" in rec:
            r = rec["ratio_tinygrad_over_torch"]
            line += (f"  torch {rec['torch']['tokens_per_s']['median']:>9,.0f} tok/s  ratio {r['median']:.3f}x "
                     f"[{r['min']:.3f}..{r['max']:.3f}]  first-loss diff {rec['first_loss']['abs_diff']:.2e}")
        print(line, flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
