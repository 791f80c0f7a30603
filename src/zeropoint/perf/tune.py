"""`zpctl tune CONFIG`: find faster kernels for a recipe's training step, keep the ones that are faster, record it all.

1. build the recipe's model and engine (as `zpctl bench` does) and capture its micro-step and optimizer step;
2. time every distinct kernel of the step alone (best CPU time of a few runs, on scratch buffers: steadier than wall
   time on a shared machine) and weigh it by how often one optimizer step calls it;
3. from the heaviest down, until `coverage` of the step's kernel time or the time `budget_s` is used: search the
   kernel's options in a child process (perf/tune_kernel.py: register tiles, then BEAM rounds; it stops at its
   deadline and is killed if it overruns `kernel_timeout_s`, so no search runs blindly for tens of minutes),
   rebuild the kernel with the options it found, time both again, and keep it only if it is `min_speedup` faster;
4. kept kernels go to $ZP_CACHE/tuned/ under the kernel's own compile key: every later process that builds that
   kernel (a training run, a bench, an eval of the same shapes) gets the tuned one, and the warm-start entries of
   captured steps are rebuilt once to pick them up (their key includes the tuned set). ZP_TUNED=0 ignores them;
5. the step is captured again on the tuned kernels and timed against the untuned capture in the same process;
6. the record (every kernel searched: calls per step, time before and after, speed-up, options, search time, kept
   or not; the step before and after; machine load) goes to $ZP_CACHE/tune/<key>.json and is returned.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tinygrad
import tinygrad.engine.realize as realize
from tinygrad import Device
from tinygrad.codegen import do_to_program
from tinygrad.codegen.opt.postrange import Scheduler, args_from_ast
from tinygrad.uop.ops import Ops

from ..engine import EngineConfig, Trainer, cpu_threads, jitcache
from ..errors import ZeropointError
from ..hashing import sha256_json
from ..models.llm import build_llm, lm_loss, trainable_params
from ..models.lora import LoRASpec
from .bench import make_batches
from .peak import cpu_model
from .tune_kernel import cpu_seconds


def tune_key(cfg, device: str) -> str:
    shape = {"model": cfg.model.config, "overrides": cfg.model.overrides, "method": cfg.method,
             "lora": cfg.lora.model_dump(exclude={"init_from"}) if cfg.method == "lora" else None, "B": cfg.train.micro_batch_size,
             "T": cfg.data.seq_len, "accum": cfg.train.grad_accum, "precision": cfg.train.precision}
    if cfg.train.activation_checkpointing != "none":   # other kernels; left out when off, so older records still match
        shape.update(activation_checkpointing=cfg.train.activation_checkpointing,
                     activation_checkpointing_k=cfg.train.activation_checkpointing_k)
    return sha256_json({"shape": shape, "device": device, "cpu": cpu_model(), "cores": os.cpu_count(),
                        "tinygrad": getattr(tinygrad, "__version__", "?")})[:16]


def records_dir() -> Path | None:
    root = jitcache.cache_root()
    return None if root is None else root / "tune"


def load_record(key: str) -> dict | None:
    d = records_dir()
    try:
        return json.loads((d / f"{key}.json").read_text()) if d is not None and (d / f"{key}.json").is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _time_kernel(prg, ast) -> float:
    """Best CPU time of one compiled kernel on scratch buffers of its shapes, seconds (perf/tune_kernel.py)."""
    rawbufs, var_vals = args_from_ast(ast, _device())
    return cpu_seconds(prg, [b.ensure_allocated() for b in rawbufs], var_vals)


def _plain(name: str) -> str:
    """A kernel name without tinygrad's terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", name)


def _device() -> str:
    return Device.DEFAULT


def _search(ast, beam: int, timeout_s: float) -> tuple[tuple | None, float, str | None, int]:
    """(best options found, seconds it took, why none, candidates timed) from a child process that searches until
    its deadline and is killed if it overruns it; it leaves its best-so-far on disk after every round."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zp-tune-") as d:
        src, dst = Path(d) / "in.pkl", Path(d) / "out.pkl"
        src.write_bytes(pickle.dumps((ast, beam, max(1.0, 0.9 * timeout_s - 3.0))))
        why = None
        try:
            p = subprocess.run([sys.executable, "-m", "zeropoint.perf.tune_kernel", str(src), str(dst)],
                               capture_output=True, text=True, timeout=timeout_s)
            if p.returncode != 0:
                why = f"search failed: {p.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            why = f"search killed at the {timeout_s:.0f} s kernel timeout"
        if not dst.is_file():
            return None, time.perf_counter() - t0, why or "search left no result", 0
        opts, _best, _default, n = pickle.loads(dst.read_bytes())
        return opts, time.perf_counter() - t0, None, n


def _build(ast, ren, opts):
    k = Scheduler(ast, ren)
    k.convert_loop_to_global()
    for o in opts:
        k.apply_opt(o)
    return do_to_program(k.get_optimized_ast(), ren)


def _step_kernels(trainer, asts: dict) -> dict:
    """{compile key: {ast, prg, calls}} for every compiled kernel of one optimizer step."""
    store = jitcache.store
    by_prg = {id(v): k for k, v in dict.items(store())} | {id(v): k for k, v in store().tuned.items() if v is not None}
    out: dict = {}
    for jit, times in ((trainer._micro, trainer.cfg.grad_accum), (trainer._opt, 1)):
        lin = jit.captured.linear.src
        for call in [c for x in lin for c in (x.src[0].src[0].src if x.src[0].op is Ops.CUSTOM_FUNCTION else (x,))]:
            prg = call.src[0]
            if prg.op is not Ops.PROGRAM or (key := by_prg.get(id(prg))) is None or key not in asts:
                continue
            e = out.setdefault(key, {"ast": asts[key][0], "ren": asts[key][1], "prg": prg, "calls": 0})
            e["calls"] += times
    return out


def _steady(trainer, batches, n: int) -> float:
    ts = []
    for b in batches[:n]:
        t0 = time.perf_counter()
        trainer.step(b)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def recipe_step(cfg, n_batches: int):
    """The recipe's training step from shapes alone: trainable parameters (random weights, the config's seed), loss,
    engine settings and `n_batches` random batches; what zpctl tune searches and bench/cpu_kernel_rules.py compares."""
    t = cfg.train
    lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
    params = trainable_params(lm.model, cfg.method, LoRASpec.from_section(cfg.lora.model_dump()), t.seed,
                              precision=t.precision)
    loss_fn = lm_loss(lm.model, t.activation_checkpointing, t.activation_checkpointing_k)
    ecfg = EngineConfig(lr=t.lr, total_steps=10_000, warmup_steps=0, grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                        weight_decay=t.weight_decay, precision=t.precision, loss_scale=t.loss_scale)
    batches = make_batches(n_batches, t.grad_accum, t.micro_batch_size, cfg.data.seq_len, lm.config.vocab_size,
                           seed=t.seed)
    return params, loss_fn, ecfg, batches


@contextmanager
def recording_kernels():
    """Inside the block, every kernel tinygrad lowers is recorded: {its compile key: (ast, renderer)}."""
    asts: dict = {}
    real_key = realize.to_program_key

    def recording_key(ast, ren):
        k = real_key(ast, ren)
        asts.setdefault(k, (ast, ren))
        return k
    realize.to_program_key = recording_key
    try:
        yield asts
    finally:
        realize.to_program_key = real_key


def run_tune(cfg, *, beam: int = 2, steps: int = 5, budget_s: float = 900.0, kernel_timeout_s: float = 120.0,
             coverage: float = 0.9, min_speedup: float = 1.05, force: bool = False, progress=None) -> dict:
    say = progress or (lambda m: None)
    if not jitcache.enable():
        raise ZeropointError("zpctl tune stores its kernels in the compile cache, and ZP_CACHE=off; unset it")
    threads = cpu_threads.enable()
    key = tune_key(cfg, _device())
    if not force and (rec := load_record(key)) is not None:
        return {**rec, "searched_now": False, "note": "already tuned on this machine; pass --force to search again"}
    t_all = time.perf_counter()
    load_before = os.getloadavg()

    # 1. the step, captured on the untuned kernels (plain TinyJits: tune must see the kernels being lowered)
    t = cfg.train
    params, loss_fn, ecfg, batches = recipe_step(cfg, 3 + 2 * steps)
    store = jitcache.store()
    saved_tuned = dict(store.tuned)
    store.tuned = {k: None for k in store.tuned}     # baseline: tinygrad's own kernels, tuned or not before
    os.environ["ZP_TUNED"], tuned_env = "0", os.environ.get("ZP_TUNED")
    try:
        say("capturing the step on tinygrad's default kernels")
        with recording_kernels() as asts:
            base = Trainer(params, loss_fn, ecfg)
            for b in batches[:3]:
                base.step(b)
    finally:
        if tuned_env is None:
            os.environ.pop("ZP_TUNED", None)
        else:
            os.environ["ZP_TUNED"] = tuned_env
    base_step_s = _steady(base, batches[3:], steps)

    # 2. every kernel timed alone, weighed by calls per step
    kernels = _step_kernels(base, asts)
    say(f"{len(kernels)} distinct kernels; timing each")
    for e in kernels.values():
        e["time_s"] = _time_kernel(e["prg"], e["ast"])
        e["total_s"] = e["time_s"] * e["calls"]
    total = sum(e["total_s"] for e in kernels.values())
    order = sorted(kernels.items(), key=lambda kv: -kv[1]["total_s"])

    # 3. search the heaviest, bounded
    rows, covered, t_search = [], 0.0, time.perf_counter()
    for k, e in order:
        spent = time.perf_counter() - t_search
        if covered >= coverage * total or spent >= budget_s:
            break
        covered += e["total_s"]
        name = _plain(e["prg"].arg.name)
        say(f"searching {name} ({e['calls']} calls/step, {e['time_s'] * 1e6:.0f} us each, "
            f"{100 * e['total_s'] / total:.1f}% of kernel time)")
        opts, search_s, why, n = _search(e["ast"], beam, min(kernel_timeout_s, budget_s - spent))
        row = {"kernel": name, "calls_per_step": e["calls"], "share_of_kernel_time": e["total_s"] / total,
               "default_us": e["time_s"] * 1e6, "search_s": round(search_s, 2), "candidates": n, "kept": False}
        if opts is not None:
            try:
                prg = _build(e["ast"], e["ren"], opts)
                tuned_s, default_s = _time_kernel(prg, e["ast"]), _time_kernel(e["prg"], e["ast"])
                row.update(opts=[str(o) for o in opts], tuned_us=tuned_s * 1e6, default_us=default_s * 1e6,
                           speedup=default_s / tuned_s if tuned_s > 0 else None, tuned_kernel=_plain(prg.arg.name))
                if tuned_s > 0 and default_s / tuned_s >= min_speedup:
                    store.put_tuned(k, prg, kernel=_plain(prg.arg.name), untuned_kernel=name, speedup=default_s / tuned_s,
                                    opts=[str(o) for o in opts])
                    saved_tuned[k] = prg
                    row["kept"] = True
                else:
                    row["why_not_kept"] = f"less than {min_speedup}x faster"
            except Exception as ex:   # an option list that does not rebuild here is simply not kept
                row["why_not_kept"] = f"{type(ex).__name__}: {ex}"[:300]
        else:
            row["why_not_kept"] = why
        rows.append(row)
    store.tuned = saved_tuned

    # 5. the step again on the kept kernels, same process, same batches
    say("capturing the step on the tuned kernels")
    tuned_tr = Trainer(params, loss_fn, ecfg)
    for b in batches[:3]:
        tuned_tr.step(b)
    tuned_step_s = _steady(tuned_tr, batches[3:], steps)
    base_again_s = _steady(base, batches[3 + steps:], steps)   # the untuned step once more: load drifts

    tokens = t.micro_batch_size * cfg.data.seq_len * t.grad_accum
    rec = {"key": key, "beam": beam, "device": _device(), "cpu": cpu_model(), "threads": threads,
           "config": {"model": cfg.model.config, "method": cfg.method, "B": t.micro_batch_size, "T": cfg.data.seq_len,
                      "accum": t.grad_accum, "precision": t.precision},
           "kernels_in_step": len(kernels), "kernel_time_per_step_s": total,
           "searched": len(rows), "kept": sum(r["kept"] for r in rows),
           "coverage_searched": sum(r["share_of_kernel_time"] for r in rows),
           "limits": {"budget_s": budget_s, "kernel_timeout_s": kernel_timeout_s, "coverage": coverage,
                      "min_speedup": min_speedup},
           "kernels": rows,
           "step": {"untuned_s": [base_step_s, base_again_s], "tuned_s": tuned_step_s,
                    "untuned_tokens_per_s": tokens / float(np.median([base_step_s, base_again_s])),
                    "tuned_tokens_per_s": tokens / tuned_step_s,
                    "speedup": float(np.median([base_step_s, base_again_s])) / tuned_step_s},
           "search_s": round(time.perf_counter() - t_search, 1), "total_s": round(time.perf_counter() - t_all, 1),
           "load_average": {"before": load_before, "after": os.getloadavg()},
           "cache": str(jitcache.cache_root() / "tuned"),
           "use": "automatic: every process with this ZP_CACHE builds these kernels tuned (ZP_TUNED=0 to ignore)",
           "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    d = records_dir()
    d.mkdir(parents=True, exist_ok=True)
    jitcache._atomic_write(d / f"{key}.json", (json.dumps(rec, indent=2, default=str) + "\n").encode())
    return {**rec, "searched_now": True}
