"""Training-step speed against the number of CPU threads that run tinygrad's split kernels (engine/cpu_threads.py).

    PYTHONPATH=src python bench/cpu_threads.py bench/configs/tiny_gpt.yaml [--steps 5] [--rounds 3] [--set k=v ...]
    PYTHONPATH=src python bench/cpu_threads.py --generate smollm2-135m [--tokens 32] [--rounds 3]

One process, one captured step: the rounds alternate between 1 thread (tinygrad's own sequential loop over a split
kernel's parts) and every thread, so machine load hits both alike. Per setting: median step time, tokens/s, and
process CPU time over wall time (1.0 = one core busy). The kernels are the same in both settings (split into
NUM_CPU_THREADS parts at compile time); only how the parts run differs. Prints one JSON line.
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
    ap.add_argument("config", nargs="?")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--generate", metavar="MODEL", help="instead of training: KV-cache decoding of MODEL (e.g. smollm2-135m)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per generation (--generate)")
    a = ap.parse_args()
    if a.generate:
        return generation(a)
    import numpy as np
    from tinygrad.helpers import NUM_CPU_THREADS

    from zeropoint.engine import EngineConfig, Trainer, cpu_threads, jitcache
    from zeropoint.models.llm import lm_loss, warm_start_args
    from zeropoint.perf.bench import make_batches
    from zeropoint.recipes import load_config
    from zeropoint.recipes.llm_finetune import build, lora_spec
    jitcache.enable()
    n_all = cpu_threads.enable()
    cfg, _ = load_config(a.config, a.overrides)
    t = cfg.train
    lm, params = build(cfg)
    model, mc = lm.model, lm.config
    ac, k = t.activation_checkpointing, t.activation_checkpointing_k
    tr = Trainer(params, lm_loss(model, ac, k), EngineConfig(lr=t.lr, total_steps=10_000, grad_clip=t.grad_clip,
                                                             grad_accum=t.grad_accum, precision=t.precision),
                 **warm_start_args(model, params, method=cfg.method, lora=lora_spec(cfg), activation_checkpointing=ac,
                                   activation_checkpointing_k=k))
    batches = make_batches(2 + a.steps, t.grad_accum, t.micro_batch_size, cfg.data.seq_len, mc.vocab_size)
    for b in batches[:2]:
        tr.step(b)
    tokens = t.micro_batch_size * cfg.data.seq_len * t.grad_accum
    res: dict = {1: {"wall": [], "cpu": []}, n_all: {"wall": [], "cpu": []}}
    for _ in range(a.rounds):
        for n in (1, n_all):
            os.environ["ZP_CPU_THREADS"] = str(n)
            cpu_threads.enable()
            for b in batches[2:]:
                w, c = time.perf_counter(), time.process_time()
                tr.step(b)
                res[n]["wall"].append(time.perf_counter() - w)
                res[n]["cpu"].append(time.process_time() - c)
    out = {"config": a.config, "overrides": a.overrides, "tokens_per_step": tokens, "split_parts": NUM_CPU_THREADS.value,
           "cpus": os.cpu_count(), "load_average": os.getloadavg(), "warm": jitcache.report()["warm"]}
    for n, r in res.items():
        med = float(np.median(r["wall"]))
        out[f"threads_{n}"] = {"step_s": med, "tokens_per_s": tokens / med,
                               "cpu_over_wall": float(sum(r["cpu"]) / sum(r["wall"])), "steps": len(r["wall"])}
    out["speedup"] = out["threads_1"]["step_s"] / out[f"threads_{n_all}"]["step_s"]
    print(json.dumps(out))
    return 0


def generation(a) -> int:
    """Decode tok/s of KV-cache generation, 1 thread against all, alternating rounds (same prompt, greedy)."""
    import numpy as np

    from zeropoint.engine import cpu_threads, jitcache
    from zeropoint.models.generate import generate
    from zeropoint.models.registry import load_model
    model, _, tok = load_model(a.generate)
    n_all = cpu_threads.enable()
    prompt = tok.encode("The history of the printing press begins", add_bos=tok.add_bos)
    generate(model, tok, prompt, max_tokens=4, stop_ids=[])          # capture (or load) prefill and decode
    res: dict = {1: {"tps": [], "cpu": [], "wall": []}, n_all: {"tps": [], "cpu": [], "wall": []}}
    for _ in range(a.rounds):
        for n in (1, n_all):
            os.environ["ZP_CPU_THREADS"] = str(n)
            cpu_threads.enable()
            w, c = time.perf_counter(), time.process_time()
            r = generate(model, tok, prompt, max_tokens=a.tokens, stop_ids=[])
            res[n]["wall"].append(time.perf_counter() - w)
            res[n]["cpu"].append(time.process_time() - c)
            res[n]["tps"].append(r.decode_tok_s)
    out = {"model": a.generate, "tokens": a.tokens, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
           "warm": jitcache.report()["warm"]}
    for n, r in res.items():
        out[f"threads_{n}"] = {"decode_tok_s": float(np.median(r["tps"])),
                               "cpu_over_wall": float(sum(r["cpu"]) / sum(r["wall"])), "runs": len(r["tps"])}
    out["speedup"] = out[f"threads_{n_all}"]["decode_tok_s"] / out["threads_1"]["decode_tok_s"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
