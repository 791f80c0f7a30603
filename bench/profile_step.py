"""Where a training step's time goes in tinygrad: kernels per jitted piece and host time per piece.

    PYTHONPATH=src python bench/profile_step.py bench/configs/tiny_gpt.yaml [--steps 5] [--set k=v ...]

Prints the number of kernels captured in the micro-step and optimizer-step JITs and the median wall time of
each piece (with a device sync after each), so "fewer kernels" and "optimizer cost" attempts have numbers.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    import numpy as np

    from zeropoint.recipes import load_config
    from zeropoint.engine import EngineConfig, Trainer, fresh, precision_context
    from zeropoint.perf.bench import make_batches
    from zeropoint.models.llm import lm_loss
    from zeropoint.recipes.llm_finetune import build
    cfg, _ = load_config(a.config, a.overrides)
    t = cfg.train
    lm, params = build(cfg)
    model, mc = lm.model, lm.config
    tr = Trainer(params, lm_loss(model, t.activation_checkpointing, t.activation_checkpointing_k),
                 EngineConfig(lr=t.lr, total_steps=100, grad_clip=t.grad_clip, precision=t.precision))
    batches = make_batches(a.steps + 3, 1, t.micro_batch_size, cfg.data.seq_len, mc.vocab_size)
    for b in batches[:3]:
        tr.step(b)
    micro_s, opt_s, full_s = [], [], []
    with precision_context(t.precision):
        for b in batches[3:]:
            t0 = time.perf_counter()
            x, y = (fresh(v) for v in b[0])
            tr._micro(x, y).item()
            t1 = time.perf_counter()
            tr._opt().item()
            t2 = time.perf_counter()
            micro_s.append(t1 - t0)
            opt_s.append(t2 - t1)
    for b in batches[3:]:
        t0 = time.perf_counter()
        tr.step(b)
        full_s.append(time.perf_counter() - t0)

    def n_kernels(j):
        cap = getattr(j, "captured", None)   # tinygrad 0.14: the capture is one LINEAR uop of kernel calls
        try:
            return len(cap.linear.src) if cap is not None else None
        except Exception as e:
            return f"unknown ({type(e).__name__})"
    print(f"trainable tensors: {len(params)}")
    print(f"kernels: micro-step JIT {n_kernels(tr._micro)}, optimizer JIT {n_kernels(tr._opt)}")
    print(f"median s: micro {np.median(micro_s):.4f}  optimizer {np.median(opt_s):.4f}  full Trainer.step {np.median(full_s):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
