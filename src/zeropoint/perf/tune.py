"""`zpctl tune CONFIG`: BEAM kernel search for a config's training step, once per machine, recorded.

tinygrad's BEAM search times candidate kernels and stores the winners in its compile cache (CACHEDB, sqlite
under ~/.cache/tinygrad), so later processes that build the same kernels with the same BEAM value reuse them
without searching. This module runs the step without BEAM (baseline), then with BEAM=k (search, then steady
state with the tuned kernels), and records both figures, the search time and the cache location in
`~/.cache/zeropoint/tune.json`, keyed by machine, tinygrad version and the step's shape. A second call for
the same key reports the record instead of searching again (unless forced). Runs pick the tuned kernels up
with `BEAM=k` in the environment (or `zpctl bench --beam k`).
"""
from __future__ import annotations

import json
import os
import time

import tinygrad
from tinygrad import Device
from tinygrad.helpers import Context

from ..hashing import sha256_json
from .bench import run_bench
from .peak import cache_dir, cpu_model


def tune_key(cfg, device: str) -> str:
    shape = {"model": cfg.model.config, "overrides": cfg.model.overrides, "method": cfg.method,
             "lora": cfg.lora.model_dump() if cfg.method == "lora" else None, "B": cfg.train.micro_batch_size,
             "T": cfg.data.seq_len, "accum": cfg.train.grad_accum, "precision": cfg.train.precision}
    return sha256_json({"shape": shape, "device": device, "cpu": cpu_model(), "cores": os.cpu_count(),
                        "tinygrad": getattr(tinygrad, "__version__", "?")})[:16]


def load_records() -> dict:
    p = cache_dir() / "tune.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def save_record(key: str, rec: dict) -> None:
    recs = load_records()
    recs[key] = rec
    p = cache_dir() / "tune.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(recs, indent=2, default=str))
    os.replace(tmp, p)


def run_tune(cfg, *, beam: int = 2, steps: int = 3, force: bool = False, progress=None) -> dict:

    key = tune_key(cfg, Device.DEFAULT)
    if not force and key in load_records():
        return {**load_records()[key], "key": key, "searched_now": False,
                "note": "already tuned on this machine; pass --force to search again"}
    say = progress or (lambda m: None)
    say("baseline (no BEAM)")
    base = run_bench(cfg, steps=steps, repeats=1, progress=progress)
    say(f"BEAM={beam} search (first steps) and tuned steady state")
    t0 = time.perf_counter()
    with Context(BEAM=beam):
        tuned = run_bench(cfg, steps=steps, repeats=1, progress=progress)
    rec = {"key": key, "beam": beam, "device": Device.DEFAULT, "cpu": cpu_model(),
           "config": {"model": cfg.model.config, "method": cfg.method, "B": cfg.train.micro_batch_size,
                      "T": cfg.data.seq_len},
           "baseline_tokens_per_s": base["tinygrad"]["tokens_per_s"]["median"],
           "tuned_tokens_per_s": tuned["tinygrad"]["tokens_per_s"]["median"],
           "search_and_compile_s": tuned["tinygrad"]["compile_s"], "total_s": time.perf_counter() - t0,
           "baseline_compile_s": base["tinygrad"]["compile_s"],
           "cache": os.environ.get("CACHEDB") or "~/.cache/tinygrad/cache.db (tinygrad CACHEDB default)",
           "use": f"BEAM={beam} in the environment of zpctl train / zpctl bench --beam {beam}",
           "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rec["speedup"] = rec["tuned_tokens_per_s"] / rec["baseline_tokens_per_s"]
    save_record(key, rec)
    return {**rec, "searched_now": True}
