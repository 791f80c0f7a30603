"""The memory plan (`zpctl model info`) against tinygrad's measured allocator high-water mark, for one config.

Builds the model exactly as the `llm_finetune` recipe does (weights, LoRA, frozen base dtype / NF4 / int8,
activation checkpointing), then times `--steps` optimizer steps on random token ids of the configured batch shape
(memory and time do not depend on the token values; the evidence says so) and records:
  - measured: the allocator high-water mark over the steps (`perf.memory.AllocatorPeak`: every buffer the
    process holds: weights, adapters, grads, AdamW moments, the steps' planned arenas), the bytes held after
    them, the high-water mark while the model was built and frozen;
  - plan: `model_info(cfg)` for the same config, and plan / measured.
Steps 1-2 are tinygrad's eager run and JIT capture; step 3 on is the replayed step.

    PYTHONPATH=src python bench/memory_plan.py configs/llm/smollm2-135m_lora.yaml --set lora.base_quant=nf4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override, as in zpctl")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--label", default="")
    args = ap.parse_args()

    import numpy as np
    from tinygrad import Device

    from zeropoint.engine import Trainer
    from zeropoint.models.llm import lm_loss
    from zeropoint.perf.memory import AllocatorPeak
    from zeropoint.recipes import load_config
    from zeropoint.recipes.llm_finetune import build, model_info
    from zeropoint.scope import require_real_compute
    require_real_compute(False)

    cfg, _ = load_config(args.config, args.sets)
    t = cfg.train
    with AllocatorPeak() as load_peak:
        lm, params = build(cfg)
    model, mc = lm.model, lm.config
    ecfg = replace(t.engine_config(total_steps=max(t.steps, args.steps)), warmup_steps=0)   # full lr from step 1
    trainer = Trainer(params, lm_loss(model, t.activation_checkpointing, t.activation_checkpointing_k), ecfg)
    rng = np.random.default_rng(0)
    B, T, V = t.micro_batch_size, cfg.data.seq_len, mc.vocab_size
    held_before = AllocatorPeak.held()
    times, losses, peaks = [], [], []
    with AllocatorPeak() as peak:
        for _ in range(args.steps):
            mbs = [(rng.integers(0, V, (B, T)).astype(np.int32), rng.integers(0, V, (B, T)).astype(np.int32))
                   for _ in range(t.grad_accum)]
            with AllocatorPeak() as step_peak:
                t0 = time.perf_counter()
                st = trainer.step(mbs)
                times.append(time.perf_counter() - t0)
            losses.append(st.loss)
            peaks.append(step_peak.bytes)
    plan = model_info(cfg)
    measured = {"peak_bytes": peak.bytes, "peak_per_step_bytes": peaks, "held_before_steps_bytes": held_before,
                "held_after_steps_bytes": AllocatorPeak.held(), "build_peak_bytes": load_peak.bytes,
                "step_s": [round(x, 3) for x in times], "replay_step_s": round(float(np.median(times[2:])), 3)
                if len(times) > 2 else None, "losses": losses}
    out = {"label": args.label, "config": args.config, "sets": args.sets, "device": Device.DEFAULT,
           "load_avg_1m": round(os.getloadavg()[0], 2), "tokens": "random ids (memory and time do not depend on them)",
           "measured": measured, "plan_total_bytes": plan["memory"]["total_bytes"], "plan": plan["memory"],
           "plan_over_measured": round(plan["memory"]["total_bytes"] / peak.bytes, 4)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
