"""Work per training step, counted by tinygrad itself: FLOPs executed, bytes moved, kernels launched, and the
wall time of replayed steps. FLOPs and kernels do not depend on machine load, so this is the figure to compare
before/after a change to the model's graph on a shared machine (wall time is printed beside it).

    PYTHONPATH=src python bench/step_work.py                    # tiny GPT bench model (0.86M params, 8 x 64 tokens)
    PYTHONPATH=src python bench/step_work.py --steps 20 --label after

Measured on the 2-core box (load ~10): 10.69 GFLOP and 369 kernels per step before the llama model materialised
its attention probabilities and SwiGLU product (tinygrad recomputed exp/sigmoid inside the backward matmuls),
3.82 GFLOP and 353 kernels after; the model math is ~2.6 GFLOP (6 x params x tokens + attention).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="replayed steps to count and time")
    ap.add_argument("--label", default="", help="a name for this measurement in the JSON line")
    args = ap.parse_args()

    import numpy as np
    from tinygrad import Tensor, TinyJit, nn
    from tinygrad.helpers import Context, GlobalCounters
    from zeropoint.models.llama import Llama, get_config, param_count
    from zeropoint.scope import require_real_compute
    require_real_compute(False)

    cfg = get_config("tiny-untied", dim=128, n_layers=4, n_heads=4, n_kv_heads=4, head_dim=32, hidden_dim=344,
                     vocab_size=257, max_seq_len=64)
    Tensor.manual_seed(0)
    model = Llama(cfg)
    opt = nn.optim.AdamW(nn.state.get_parameters(model), lr=1e-3)
    rng = np.random.default_rng(0)
    x = Tensor(rng.integers(0, cfg.vocab_size, (8, 64)).astype(np.int32)).realize()
    y = Tensor(rng.integers(0, cfg.vocab_size, (8, 64)).astype(np.int32)).realize()

    @TinyJit
    def step():
        with Context(TRAINING=1):
            opt.zero_grad()
            loss = model(x).sparse_categorical_crossentropy(y)
            loss.backward()
            opt.step()
            return loss.realize()

    for _ in range(3):   # eager, capture, first replay
        step()
    GlobalCounters.reset()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    final = float(loss.numpy())
    dt = (time.perf_counter() - t0) / args.steps
    tokens = 8 * 64
    print(json.dumps({"label": args.label, "params": param_count(cfg), "tokens_per_step": tokens,
                      "model_gflop_per_step": 6 * param_count(cfg) * tokens / 1e9,
                      "executed_gflop_per_step": GlobalCounters.global_ops / args.steps / 1e9,
                      "gb_moved_per_step": GlobalCounters.global_mem / args.steps / 1e9,
                      "kernels_per_step": GlobalCounters.kernel_count / args.steps,
                      "step_s": dt, "final_loss": final}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
