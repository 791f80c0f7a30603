"""`zpctl bench` (training-step throughput, optionally side by side with PyTorch), `zpctl tune` (BEAM search
once per machine) and `zpctl perf report RUN` (perf.json + perf.png for a finished run)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import AllowSimOpt, JsonOpt, SetOpt, console, err_console, handle_errors, print_json

perf_app = typer.Typer(help="Performance reports of runs.", no_args_is_help=True)


def _fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f} MiB" if b >= 2**24 else f"{b / 2**10:,.0f} KiB"


def _energy_per_step(side: dict) -> str:
    return _fmt((side.get("energy_timed") or {}).get("energy_per_step_j"), ",.1f")


def _show_bench(rec: dict) -> None:
    c = rec["config"]
    t = Table(title=f"bench {c['model']} {c['method']}  B={c['micro_batch_size']} T={c['seq_len']} "
                    f"accum={c['grad_accum']} {c['precision']}  ({rec['tokens_per_step']} tok/step)"
                    + ("  RANDOM WEIGHTS" if (rec.get("weights") or {}).get("kind") == "random" else ""))
    t.add_column("")
    t.add_column(f"tinygrad (Zeropoint) on {rec['tinygrad']['device']}", justify="right")
    has_torch = "torch" in rec
    if has_torch:
        t.add_column(f"PyTorch {rec['torch']['version']} eager on {rec['torch']['device']}", justify="right")
    tg, th = rec["tinygrad"], rec.get("torch", {})

    def row(name, a, b=None):
        t.add_row(name, a, *([b if b is not None else "-"] if has_torch else []))
    for k in ("min", "median", "max"):
        row(f"tokens/s {k}", _fmt(tg["tokens_per_s"][k]), _fmt(th["tokens_per_s"][k]) if has_torch else None)
    ws = tg.get("warm_start") or {}
    row(f"first step s ({'warm: loaded' if ws.get('warm') else 'cold: compiled'})", _fmt(tg["first_step_s"], ".2f"),
        _fmt(th.get("first_step_s"), ".3f") if has_torch else None)
    row("MFU", _fmt(tg["mfu"], ".2%"), _fmt(th.get("mfu"), ".2%") if has_torch else None)
    row("peak device memory", _mib(tg["memory"].get("allocator", {}).get("peak_bytes")),
        _mib(th.get("memory", {}).get("max_allocated_bytes")) if has_torch else None)
    row("energy per step J", _energy_per_step(tg), _energy_per_step(th) if has_torch else None)
    if has_torch:
        row("first loss", f"{rec['first_loss']['tinygrad']:.5f}", f"{rec['first_loss']['torch']:.5f}")
    console.print(t)
    nv = tg["memory"].get("nvml")
    if isinstance(nv, list):
        for g in nv:
            console.print(f"NVML {g['device']}: used peak {_mib(g.get('used_peak_bytes'))} of {_mib(g['total_bytes'])} "
                          "(whole card, both frameworks)")
    mp = rec.get("memory_plan")
    if mp and mp.get("measured_over_plan"):
        console.print(f"memory plan (zpctl model info) {_mib(mp['plan_bytes']['total_bytes'])}; measured tinygrad peak "
                      f"{_mib(mp['measured_peak_bytes'])} ({mp['measured_over_plan']:.2f}x the plan)")
    if has_torch:
        r = rec["ratio_tinygrad_over_torch"]
        console.print(f"ratio tinygrad/torch tokens/s over {rec['repeats']} rounds: "
                      f"min {r['min']:.3f}x  median [bold]{r['median']:.3f}x[/]  max {r['max']:.3f}x")
    if "startup" in rec:
        su = rec["startup"]
        console.print(f"start (fresh processes): cold {su['cold']['process_wall_s']:.1f} s to the first step "
                      f"(step {su['cold']['first_step_s']:.2f} s), warm {su['warm']['process_wall_s']:.1f} s "
                      f"(step {su['warm']['first_step_s']:.2f} s); cache {su['cache_bytes'] / 2**20:.1f} MiB")
    pk = tg["peak"]
    console.print(f"peak: {_fmt(pk.get('flops'), '.3e')} FLOP/s ({pk.get('source') or pk.get('reason')}); "
                  f"energy: {tg['energy'].get('energy_j') if tg['energy'].get('energy_j') is not None else 'null - ' + tg['energy'].get('reason', '')}")
    if rec.get("run_id"):
        console.print(f"run {rec['run_id']}: bench.json, perf.json, perf.png")


def _show_vision_bench(rec: dict) -> None:
    c, u = rec["config"], rec["unit"]
    m = c["model"]
    shape = (f"{m['image_size']}px/{m['patch_size']} dim {m['dim']} x{m['depth']}" if "patch_size" in m else
             f"image {m['vision']['image_size']}px dim {m['vision']['dim']} x{m['vision']['depth']}, text ctx "
             f"{m['text']['context']} dim {m['text']['dim']} x{m['text']['depth']}")
    t = Table(title=f"bench {rec['recipe']} ({shape})  B={c['micro_batch_size']} accum={c['grad_accum']} "
                    f"{c['precision']}  ({rec[f'{u}_per_step']} {u}/step)  random weights")
    t.add_column("")
    t.add_column("tinygrad (Zeropoint)", justify="right")
    has_torch = "torch" in rec
    if has_torch:
        t.add_column(f"PyTorch {rec['torch']['version']} eager", justify="right")
    tg, th = rec["tinygrad"], rec.get("torch", {})

    def row(name, a, b=None):
        t.add_row(name, a, *([b if b is not None else "-"] if has_torch else []))
    for k in ("min", "median", "max"):
        row(f"{u}/s {k}", _fmt(tg[f"{u}_per_s"][k], ",.1f"), _fmt(th[f"{u}_per_s"][k], ",.1f") if has_torch else None)
    row("first step s (compile)", _fmt(tg["first_step_s"], ".2f"), _fmt(th.get("first_step_s"), ".3f") if has_torch else None)
    row("MFU", _fmt(tg["mfu"], ".2%"), _fmt(th.get("mfu"), ".2%") if has_torch else None)
    if has_torch:
        row("first loss", f"{rec['first_loss']['tinygrad']:.6f}", f"{rec['first_loss']['torch']:.6f}")
    console.print(t)
    if has_torch:
        r = rec["ratio_tinygrad_over_torch"]
        console.print(f"ratio tinygrad/torch {u}/s over {rec['repeats']} rounds: min {r['min']:.3f}x  median "
                      f"[bold]{r['median']:.3f}x[/]  max {r['max']:.3f}x; losses of all "
                      f"{len(tg['losses'])} steps agree within {rec['loss_max_abs_diff']:.2e}")
    mp = rec["memory_plan"]
    if mp["measured_over_plan"]:
        console.print(f"memory plan (zpctl model info) {mp['plan_bytes']['total_bytes'] / 2**20:,.2f} MiB; tinygrad "
                      f"allocator peak {mp['measured_peak_bytes'] / 2**20:,.2f} MiB ({mp['measured_over_plan']:.2f}x)")
    if rec.get("run_id"):
        console.print(f"run {rec['run_id']}: bench.json, perf.json, perf.png")


def _bench_vision(config: Path, cfg, scope, *, steps: int, repeats: int, compare: str | None, warmup: int,
                  beam: int | None, torch_threads: int | None, json_out: bool):
    """`zpctl bench` of a vit_classify / clip_contrastive config: images (pairs) per second, random weights."""
    from tinygrad.helpers import Context

    from ..evidence import start_run
    from ..perf.bench_vision import run_vision_bench
    from ..perf.report import plot_perf
    from ..recipes import clip_contrastive, vit_classify
    from ..workspace import atomic_write_text
    is_vit = cfg.recipe == "vit_classify"
    mcfg = vit_classify.model_config(cfg) if is_vit else clip_contrastive.model_config(cfg)
    say = (lambda m: err_console.print(f"[dim]{m}[/]")) if not json_out else None
    with start_run(f"zpctl bench {config}", cfg, kind="bench", seed=cfg.train.seed, scope=scope) as run:
        with Context(**({"BEAM": beam} if beam is not None else {})):
            rec = run_vision_bench(mcfg, cfg.train, label_smoothing=cfg.train.label_smoothing if is_vit else 0.0,
                                   steps=steps, repeats=repeats, compare_torch=compare == "torch", warmup=warmup,
                                   progress=say, torch_threads=torch_threads)
        rec["run_id"] = run.id
        u = rec["unit"]
        atomic_write_text(run.dir / "bench.json", json.dumps(rec, indent=2, default=str) + "\n")
        atomic_write_text(run.dir / "perf.json", json.dumps(rec["perf"], indent=2, default=str) + "\n")
        step_s = rec["tinygrad"]["warmup_step_s"] + [r["tinygrad_step_s"] for r in rec["rounds"] for _ in range(steps)]
        plot_perf([{"step": i + 1, f"{u}_per_s": rec[f"{u}_per_step"] / s, "loss": loss}
                   for i, (s, loss) in enumerate(zip(step_s, rec["tinygrad"]["losses"]))],
                  run.dir / "perf.png", title=f"bench {rec['recipe']} ({cfg.model.config})")
        summ = {f"tinygrad_{u}_per_s": rec["tinygrad"][f"{u}_per_s"]["median"],
                "first_step_s": rec["tinygrad"]["first_step_s"], "mfu": rec["tinygrad"]["mfu"]}
        if "torch" in rec:
            summ.update({f"torch_{u}_per_s": rec["torch"][f"{u}_per_s"]["median"],
                         "ratio_median": rec["ratio_tinygrad_over_torch"]["median"]})
        run.update(summary=summ)
    return print_json(rec) if json_out else _show_vision_bench(rec)


def register(app: typer.Typer) -> None:
    app.add_typer(perf_app, name="perf")

    @app.command()
    @handle_errors
    def bench(config: Path = typer.Argument(..., help="Recipe YAML, e.g. bench/configs/tiny_gpt.yaml, configs/llm/smollm2-135m_lora.yaml or configs/vision/vit-tiny_fashion-mnist.yaml"),
              compare: Optional[str] = typer.Option(None, "--compare", help="'torch': run the PyTorch eager twin alternately in the same process"),
              steps: int = typer.Option(5, "--steps", min=1, help="timed steps per side per round"),
              repeats: int = typer.Option(3, "--repeats", min=1, help="rounds; the ratio is reported as min/median/max over them"),
              warmup: int = typer.Option(2, "--warmup", min=1, help="untimed-for-throughput warm-up steps (JIT capture needs 2)"),
              beam: Optional[int] = typer.Option(None, "--beam", help="BEAM width for tinygrad kernels (uses the tune cache)"),
              torch_threads: Optional[int] = typer.Option(None, "--torch-threads", min=1, help="torch.set_num_threads "
                                                          "(default: torch's choice); on a busy box OpenMP threads that "
                                                          "wait on each other make torch's times erratic"),
              startup: bool = typer.Option(False, "--startup", help="also time cold against warm start: two fresh "
                                           "processes on one empty compile cache, to the end of their first step"),
              torch_device: Optional[str] = typer.Option(None, "--torch-device", help="the twin's PyTorch device "
                                                         "(default: the one matching tinygrad's: CUDA/NV -> cuda, "
                                                         "CPU -> cpu, METAL -> mps)"),
              random_weights: bool = typer.Option(False, "--random-weights", help="random init of the model's exact "
                                                  "shapes instead of model.weights (weights not installed); the "
                                                  "record says so"),
              set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt, allow_simulated: bool = AllowSimOpt):
        """Tokens/s (images/s for vision) of the recipe's training step; with --compare torch, beside PyTorch.

        Same model and weights, batch, sequence length and precision on both sides; the first-step loss of
        both is printed as a check that they compute the same thing. The record goes to runs/<id>/."""
        from ..errors import ConfigError
        from ..evidence import start_run
        from ..recipes import load_config
        from ..scope import require_real_compute
        if compare not in (None, "torch"):
            raise ConfigError(f"--compare {compare!r} is not supported; the only reference is 'torch'")
        if torch_device and compare != "torch":
            raise ConfigError("--torch-device names the twin's device; it needs --compare torch")
        scope = require_real_compute(allow_simulated)
        cfg, _ = load_config(config, set_)
        if cfg.recipe in ("vit_classify", "clip_contrastive"):
            return _bench_vision(config, cfg, scope, steps=steps, repeats=repeats, compare=compare, warmup=warmup,
                                 beam=beam, torch_threads=torch_threads, json_out=json_out)
        from ..perf.bench import run_bench
        from ..perf.report import plot_perf
        from ..workspace import atomic_write_text
        say = (lambda m: err_console.print(f"[dim]{m}[/]")) if not json_out else None
        with start_run(f"zpctl bench {config}", cfg, kind="bench", seed=cfg.train.seed, scope=scope) as run:
            kw = dict(steps=steps, repeats=repeats, compare_torch=compare == "torch", warmup=warmup, progress=say,
                      torch_threads=torch_threads, torch_device=torch_device, random_weights=random_weights)
            if beam is not None:
                from tinygrad.helpers import Context
                with Context(BEAM=beam):
                    rec = run_bench(cfg, **kw)
            else:
                rec = run_bench(cfg, **kw)
            if startup:
                from ..perf.startup import cold_and_warm
                from .startup_probe import command as probe_command
                if say:
                    say("cold and warm start: two fresh processes on one empty compile cache")
                rec["startup"] = cold_and_warm(probe_command(str(config), list(set_ or [])))
            rec["run_id"] = run.id
            atomic_write_text(run.dir / "bench.json", json.dumps(rec, indent=2, default=str) + "\n")
            perf = rec["perf"]
            atomic_write_text(run.dir / "perf.json", json.dumps(perf, indent=2, default=str) + "\n")
            steps_rows = [{"step": i + 1, "tokens_per_s": rec["tokens_per_step"] / s, "loss": l}
                          for i, (s, l) in enumerate(zip(rec["tinygrad"]["warmup_step_s"] + [r["tinygrad_step_s"] for r in rec["rounds"] for _ in range(steps)],
                                                         rec["tinygrad"]["losses"]))]
            plot_perf(steps_rows, run.dir / "perf.png", title=f"bench {cfg.model.config} {cfg.method}")
            summ = {"tinygrad_tokens_per_s": rec["tinygrad"]["tokens_per_s"]["median"],
                    "first_step_s": rec["tinygrad"]["first_step_s"], "mfu": rec["tinygrad"]["mfu"],
                    "warm_start": rec["tinygrad"]["warm_start"]["warm"]}
            if "startup" in rec:
                summ.update(cold_first_step_s=rec["startup"]["cold"]["first_step_s"],
                            warm_first_step_s=rec["startup"]["warm"]["first_step_s"])
            if "torch" in rec:
                summ.update(torch_tokens_per_s=rec["torch"]["tokens_per_s"]["median"],
                            ratio_median=rec["ratio_tinygrad_over_torch"]["median"])
            run.update(summary=summ)
        return print_json(rec) if json_out else _show_bench(rec)

    @app.command()
    @handle_errors
    def tune(config: Path = typer.Argument(..., help="Recipe YAML whose training step to tune"),
             beam: int = typer.Option(2, "--beam", min=1, help="BEAM width (search cost grows with it)"),
             steps: int = typer.Option(5, "--steps", min=1, help="timed steps before and after"),
             budget: float = typer.Option(900.0, "--budget", min=1, help="seconds of kernel search in all"),
             kernel_timeout: float = typer.Option(120.0, "--kernel-timeout", min=1,
                                                  help="seconds one kernel's search may take before it is stopped"),
             coverage: float = typer.Option(0.9, "--coverage", min=0.01, max=1.0,
                                            help="search the heaviest kernels until this share of the step's kernel time"),
             force: bool = typer.Option(False, "--force", help="search again even if this machine has a record"),
             set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt, allow_simulated: bool = AllowSimOpt):
        """Find faster kernels for CONFIG's training step (bounded BEAM search, heaviest kernels first).

        Kernels that beat tinygrad's default by 5% or more go to $ZP_CACHE/tuned and are used by
        every later run that builds them (ZP_TUNED=0 to ignore). The record lists every kernel
        searched (time before and after, speed-up, kept or not) and the step before and after;
        it is kept in $ZP_CACHE/tune/<key>.json."""
        from ..recipes import load_config
        from ..scope import require_real_compute
        require_real_compute(allow_simulated)
        cfg, _ = load_config(config, set_)
        if cfg.recipe != "llm_finetune":
            from ..errors import ConfigError
            raise ConfigError(f"zpctl tune searches llm_finetune training steps; {config} is a {cfg.recipe} config "
                              f"(time it with zpctl bench {config} [--beam K])")
        from ..perf.tune import run_tune
        say = (lambda m: err_console.print(f"[dim]{m}[/]")) if not json_out else None
        rec = run_tune(cfg, beam=beam, steps=steps, budget_s=budget, kernel_timeout_s=kernel_timeout,
                       coverage=coverage, force=force, progress=say)
        if json_out:
            return print_json(rec)
        t = Table(title=f"tune {config}: {rec['kept']} of {rec['searched']} searched kernels kept "
                        f"({rec['kernels_in_step']} in the step)")
        for col in ("kernel", "calls/step", "share", "default us", "tuned us", "speed-up", "search s", "kept"):
            t.add_column(col, justify="left" if col == "kernel" else "right")
        for r in rec["kernels"]:
            t.add_row(r["kernel"], str(r["calls_per_step"]), f"{r['share_of_kernel_time']:.1%}", _fmt(r["default_us"]),
                      _fmt(r.get("tuned_us")), _fmt(r.get("speedup"), ".2f"), _fmt(r["search_s"], ".1f"),
                      "yes" if r["kept"] else (r.get("why_not_kept") or "no")[:40])
        console.print(t)
        st = rec["step"]
        console.print(f"step: untuned {_fmt(st['untuned_tokens_per_s'])} tok/s, tuned {_fmt(st['tuned_tokens_per_s'])} "
                      f"tok/s ([bold]{st['speedup']:.2f}x[/]); search {rec['search_s']} s; record in "
                      f"{rec['cache'].rsplit('/', 1)[0]}/tune/{rec['key']}.json"
                      + ("" if rec.get("searched_now", True) else f"  ({rec.get('note')})"))

    @perf_app.command("report")
    @handle_errors
    def report(run_id: str = typer.Argument(..., help="run id or directory"), json_out: bool = JsonOpt):
        """Write runs/<id>/perf.json and perf.png from the run's metrics (tok/s, compile vs steady, MFU, cost)."""
        from ..evidence import load_run
        from ..perf.report import write_run_perf
        run = load_run(run_id)
        doc = write_run_perf(run)
        doc = {k: v for k, v in doc.items() if k != "per_step"}
        if json_out:
            return print_json(doc)
        t = Table(title=f"perf {run.id}", show_header=False)
        t.add_row("steady tokens/s", _fmt(doc["tokens_per_s"]))
        t.add_row("compile (warm-up) s", _fmt(doc["compile_s"], ".2f"))
        t.add_row("FLOPs/step", _fmt(doc["flops_per_step"], ".3e"))
        t.add_row("MFU", _fmt(doc["mfu"], ".2%") + f"  vs {doc['peak'].get('source') or doc['peak'].get('reason')} peak")
        t.add_row("energy", str(doc["energy"].get("energy_j")) + ("" if doc["energy"].get("energy_j") is not None else f" ({doc['energy'].get('reason')})"))
        t.add_row("cost $", str(doc["cost"]["usd_total"]) + (f" ({'; '.join(doc['cost']['reasons'])})" if doc["cost"]["reasons"] else ""))
        t.add_row("files", f"{run.dir}/perf.json, perf.png")
        console.print(t)
