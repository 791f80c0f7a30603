"""Training-step throughput on 1 device vs data parallel over N devices, side by side in one process.

    PYTHONPATH=src python bench/devices.py                        # tiny GPT, 1 vs 2 virtual CPU devices
    PYTHONPATH=src python bench/devices.py --only smollm2-lora --steps 3 --repeats 2 --out /tmp/devices.json
    DEV=CUDA PYTHONPATH=src python bench/devices.py --devices CUDA:0,CUDA:1   # real devices, where there are some

The same model (same seed, same weights) is built once per placement and trained on the same random batches
(global batch = the config's micro_batch_size, split across the devices); the placements alternate round by round,
so they are timed under the same machine load. Prints step time and tokens/s of each, the ratio (min/median/max
over rounds) and the largest loss difference between the placements (the correctness side: data parallel must
train the same model).

On a CPU the N "devices" are virtual: tinygrad's CPU:0 and CPU:1 run in one process on the same cores, so no
speed-up is expected (each device's kernels already use every core: engine/cpu_threads.py) and the extra cost
is the split, the gradient all-reduce and the gather. Only separate accelerators can show scaling. The record
says which it was.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tinygrad import Device  # noqa: E402

from zeropoint.engine import cpu_threads, jitcache  # noqa: E402
from zeropoint.engine.parallel import resolve_devices  # noqa: E402
from zeropoint.engine.trainer import EngineConfig, Trainer  # noqa: E402
from zeropoint.models.llama import state_dict  # noqa: E402
from zeropoint.models.llm import arch_config, build_llm, lm_loss, trainable_params, warm_start_args  # noqa: E402
from zeropoint.models.lora import LoRASpec  # noqa: E402
from zeropoint.perf.bench import make_batches  # noqa: E402
from zeropoint.recipes import load_config  # noqa: E402
from zeropoint.scope import require_real_compute  # noqa: E402

CASES = {
    "tiny": ROOT / "bench/configs/tiny_gpt.yaml",
    "smollm2-lora": ROOT / "configs/llm/smollm2-135m_lora.yaml",
}


def _stats(xs: list[float]) -> dict:
    return {"min": float(np.min(xs)), "median": float(np.median(xs)), "max": float(np.max(xs))}


def build_side(cfg, devices, shard_optimizer: bool, total_steps: int):
    t = cfg.train
    lora = LoRASpec.from_section(cfg.lora.model_dump())
    lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
    params = trainable_params(lm.model, cfg.method, lora, t.seed, precision=t.precision)
    ecfg = EngineConfig(lr=t.lr, total_steps=total_steps, warmup_steps=0, min_lr_ratio=t.min_lr_ratio,
                        weight_decay=t.weight_decay, grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                        precision=t.precision, loss_scale=t.loss_scale, jit=t.jit, devices=devices,
                        shard_optimizer=shard_optimizer)
    trainer = Trainer(params, lm_loss(lm.model, t.activation_checkpointing, t.activation_checkpointing_k), ecfg,
                      **warm_start_args(lm.model, params, method=cfg.method, lora=lora,
                                        activation_checkpointing=t.activation_checkpointing,
                                        activation_checkpointing_k=t.activation_checkpointing_k))
    for w in state_dict(lm.model).values():   # the weights the trainer does not own (a LoRA base), as the recipe does
        trainer.place.replicate(w)
    return trainer


def bench_case(cfg, devices: list, *, steps: int, repeats: int, warmup: int, shard_optimizer: bool, say) -> dict:
    t = cfg.train
    B, T, A = t.micro_batch_size, cfg.data.seq_len, t.grad_accum
    tokens_per_step = B * T * A
    total = warmup + steps * repeats
    sides = {"1 device": (1, False), f"{len(devices)} devices": (tuple(devices), shard_optimizer)}
    trainers, build_s = {}, {}
    for name, (devs, shard) in sides.items():
        say(f"building {name}")
        t0 = time.perf_counter()
        trainers[name] = build_side(cfg, devs, shard, total)
        build_s[name] = time.perf_counter() - t0
    batches = make_batches(total, A, B, T, arch_config(cfg.model).vocab_size, seed=t.seed)
    losses = {n: [] for n in sides}
    warm = {n: [] for n in sides}
    for name, tr in trainers.items():   # first steps: graph building, kernel compiles, JIT capture
        for i in range(warmup):
            say(f"{name}: warm-up step {i + 1}/{warmup}")
            t0 = time.perf_counter()
            losses[name].append(tr.step(batches[i]).loss)
            warm[name].append(time.perf_counter() - t0)
    rounds, k = [], warmup
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}: {steps} steps each side")
        row = {"round": r + 1}
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            for i in range(steps):
                losses[name].append(tr.step(batches[k + i]).loss)
            row[name] = (time.perf_counter() - t0) / steps
        rounds.append(row)
        k += steps
    one, many = list(sides)
    diff = max(abs(a - b) for a, b in zip(losses[one], losses[many]))
    return {
        "devices": {one: [Device.DEFAULT], many: list(devices)}, "shard_optimizer": shard_optimizer,
        "config": {"model": cfg.model.config, "weights": cfg.model.weights, "method": cfg.method,
                   "micro_batch_size": B, "seq_len": T, "grad_accum": A, "precision": t.precision},
        "weights": "configured: " + str(cfg.model.weights) if cfg.model.weights else "random init (model.weights is null)",
        "data": "uniform random token ids, fixed seed (step time does not depend on token values)",
        "tokens_per_step": tokens_per_step, "steps": steps, "repeats": repeats, "warmup_steps": warmup,
        "build_s": build_s, "warmup_step_s": warm,
        "step_s": {n: _stats([r[n] for r in rounds]) for n in sides},
        "tokens_per_s": {n: _stats([tokens_per_step / r[n] for r in rounds]) for n in sides},
        "speedup_many_over_one": _stats([r[one] / r[many] for r in rounds]),
        "max_abs_loss_diff": diff, "losses": losses, "rounds": rounds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(CASES), action="append", help="run only this case (repeatable); default tiny")
    ap.add_argument("--devices", default="2", help="N (virtual devices of DEV) or comma-separated names")
    ap.add_argument("--shard-optimizer", action="store_true", help="ZeRO-1 on the multi-device side")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side (JIT capture needs 2)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override k=v")
    ap.add_argument("--out", type=Path, help="write the records as JSON here")
    args = ap.parse_args()
    require_real_compute(False)
    jitcache.enable()
    threads = cpu_threads.enable()
    devices = list(resolve_devices(int(args.devices) if args.devices.isdigit() else args.devices.split(",")))
    virtual = len({d.split(":")[0] for d in devices}) == 1 and devices[0].split(":")[0].upper() in ("CPU", "CLANG", "LLVM")
    caveat = (f"{len(devices)} virtual CPU devices in one process share this machine's {os.cpu_count()} cores: no "
              "speed-up is expected; this measures the cost of the split, all-reduce and gather, and checks that "
              "both placements train the same model" if virtual else
              f"{len(devices)} separate devices: the ratio is real scaling")
    load0 = os.getloadavg()
    out = {"machine": {"cpu_count": os.cpu_count(), "device": Device.DEFAULT, "cpu_threads": threads,
                       "loadavg_start": load0}, "caveat": caveat, "cases": {}}
    print(f"note: {caveat}", file=sys.stderr, flush=True)
    for name in args.only or ["tiny"]:
        cfg, _ = load_config(CASES[name], args.overrides)
        print(f"== {name}: {CASES[name].relative_to(ROOT)}", file=sys.stderr, flush=True)
        rec = bench_case(cfg, devices, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
                         shard_optimizer=args.shard_optimizer, say=lambda m: print(f"   {m}", file=sys.stderr, flush=True))
        out["cases"][name] = rec
        one, many = list(rec["step_s"])
        print(f"{name:13s} tok/step {rec['tokens_per_step']:>5}  {one}: {rec['step_s'][one]['median']:.3f} s/step "
              f"({rec['tokens_per_s'][one]['median']:,.0f} tok/s)  {many}: {rec['step_s'][many]['median']:.3f} s/step "
              f"({rec['tokens_per_s'][many]['median']:,.0f} tok/s)  speed-up {rec['speedup_many_over_one']['median']:.2f}x "
              f"[{rec['speedup_many_over_one']['min']:.2f}..{rec['speedup_many_over_one']['max']:.2f}]  "
              f"max loss diff {rec['max_abs_loss_diff']:.1e}", flush=True)
    out["machine"]["loadavg_end"] = os.getloadavg()
    print(f"caveat: {caveat}. load average {load0[0]:.1f} -> {out['machine']['loadavg_end'][0]:.1f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
